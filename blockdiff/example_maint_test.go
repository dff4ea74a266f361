package blockdiff_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"time"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/objstore"
)

// exampleRepo makes a repository with three daily versions of a small volume.
func exampleRepo(name string) (*blockdiff.Repository, objstore.Store) {
	ctx := context.Background()
	store, err := objstore.Open(ctx, "mem://"+name)
	if err != nil {
		log.Fatal(err)
	}
	repo, err := blockdiff.Init(ctx, store, blockdiff.InitConfig{BlockSize: 64 << 10}, blockdiff.Options{})
	if err != nil {
		log.Fatal(err)
	}
	for day := range 3 {
		image := bytes.Repeat([]byte{byte('a' + day), 'x'}, 64<<10) // two equal blocks: one object a day
		if _, err := repo.Backup(ctx, blockdiff.NewSource(bytes.NewReader(image), int64(len(image))),
			blockdiff.BackupOptions{Volume: "pvc-db"}); err != nil {
			log.Fatal(err)
		}
	}
	return repo, store
}

// A deep scrub reads every block of every valid version back and checks it.
func ExampleRepository_Scrub() {
	ctx := context.Background()
	repo, _ := exampleRepo("example-scrub")
	defer repo.Close()
	rep, err := repo.Scrub(ctx, blockdiff.ScrubOptions{Deep: true, All: true})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("versions:", rep.VersionsChecked, "objects:", rep.ObjectsChecked, "ok:", rep.OK())
	// Output:
	// versions: 3 objects: 3 ok: true
}

// Enforce applies the seed's Benji policy; the dry run says what would go
// and which rule keeps the rest.
func ExampleRepository_Enforce() {
	ctx := context.Background()
	repo, _ := exampleRepo("example-enforce")
	defer repo.Close()
	res, err := repo.Enforce(ctx, "latest2", blockdiff.EnforceOptions{DryRun: true})
	if err != nil {
		log.Fatal(err)
	}
	vol := res.Volumes[0]
	fmt.Println(vol.Volume, "kept:", len(vol.Kept), "by", vol.Kept[0].Reasons, "- would remove:", len(vol.Removed))
	if _, err := repo.Enforce(ctx, "latest2", blockdiff.EnforceOptions{}); err != nil {
		log.Fatal(err)
	}
	left, _ := repo.List(ctx, blockdiff.Filter{Volume: "pvc-db"})
	fmt.Println("versions left:", len(left))
	// Output:
	// pvc-db kept: 2 by [latest2 (#1)] - would remove: 1
	// versions left: 2
}

// Cleanup reclaims the blocks of removed versions once they are older than
// the grace period (none here, for the example), and compacts the index.
func ExampleRepository_Cleanup() {
	ctx := context.Background()
	repo, _ := exampleRepo("example-cleanup")
	defer repo.Close()
	versions, _ := repo.List(ctx, blockdiff.Filter{})
	if err := repo.Remove(ctx, versions[0].ID, blockdiff.RemoveOptions{}); err != nil {
		log.Fatal(err)
	}
	res, err := repo.Cleanup(ctx, blockdiff.CleanupOptions{Grace: -time.Nanosecond})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("objects:", res.Objects, "deleted:", res.Deleted, "index segments:", res.SegmentsBefore, "->", res.SegmentsAfter)
	// Output:
	// objects: 3 deleted: 1 index segments: 3 -> 1
}
