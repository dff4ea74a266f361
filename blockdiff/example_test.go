package blockdiff_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"strings"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/objstore"
)

// Example backs up an in-memory image into a new repository, lists it and
// restores it.
func Example() {
	ctx := context.Background()
	store, err := objstore.Open(ctx, "mem://example")
	if err != nil {
		log.Fatal(err)
	}
	repo, err := blockdiff.Init(ctx, store, blockdiff.InitConfig{BlockSize: 64 << 10}, blockdiff.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer repo.Close()

	image := bytes.Repeat([]byte("cairn "), 50000) // 300000 bytes: 5 blocks, blocks 0 and 3 equal
	v, err := repo.Backup(ctx, blockdiff.NewSource(bytes.NewReader(image), int64(len(image))),
		blockdiff.BackupOptions{Volume: "pvc-db", Labels: map[string]string{"ns": "postgres"}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("blocks:", v.Stats.BlocksTotal, "new:", v.Stats.BlocksNew)

	versions, _ := repo.List(ctx, blockdiff.Filter{Volume: "pvc-db"})
	fmt.Println("versions:", len(versions), versions[0].Status)

	out := &buffer{b: make([]byte, v.Size)}
	if err := repo.Restore(ctx, v.ID, out, blockdiff.RestoreOptions{}); err != nil {
		log.Fatal(err)
	}
	fmt.Println("identical:", bytes.Equal(out.b, image))
	// Output:
	// blocks: 5 new: 4
	// versions: 1 valid
	// identical: true
}

// ExampleRepository_Backup_differential backs up only the extents that
// `rbd diff --format=json` reports, copying the rest from the base version.
func ExampleRepository_Backup_differential() {
	ctx := context.Background()
	store, _ := objstore.Open(ctx, "mem://example-diff")
	repo, _ := blockdiff.Init(ctx, store, blockdiff.InitConfig{BlockSize: 64 << 10}, blockdiff.Options{})
	defer repo.Close()

	image := make([]byte, 1<<20)
	for i := range image {
		image[i] = byte(i / 7)
	}
	base, _ := repo.Backup(ctx, blockdiff.NewSource(bytes.NewReader(image), int64(len(image))),
		blockdiff.BackupOptions{Volume: "vol"})

	copy(image[65536:], "changed")
	hints, _ := blockdiff.ParseRBDDiff(strings.NewReader(`[{"offset":65536,"length":4096,"exists":"true"}]`))
	v, err := repo.Backup(ctx, blockdiff.NewSource(bytes.NewReader(image), int64(len(image))),
		blockdiff.BackupOptions{Volume: "vol", Base: base.ID, Hints: hints})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("new:", v.Stats.BlocksNew, "verified:", v.Stats.BlocksVerified, "copied:", v.Stats.BlocksFromBase)
	// Output:
	// new: 1 verified: 10 copied: 5
}

// ExampleOpen opens an encrypted repository; a wrong passphrase is an error
// of its own.
func ExampleOpen() {
	ctx := context.Background()
	store, _ := objstore.Open(ctx, "mem://example-enc")
	kdf := &blockdiff.KDFParams{Time: 1, MemoryKiB: 1024, Threads: 1} // cheap for the example
	repo, err := blockdiff.Init(ctx, store, blockdiff.InitConfig{Encrypt: true, KDF: kdf},
		blockdiff.Options{Passphrase: []byte("s3cret")})
	if err != nil {
		log.Fatal(err)
	}
	repo.Close()

	_, err = blockdiff.Open(ctx, store, blockdiff.Options{Passphrase: []byte("guess")})
	fmt.Println(err)
	repo, err = blockdiff.Open(ctx, store, blockdiff.Options{Passphrase: []byte("s3cret")})
	fmt.Println(err, repo.Encrypted())
	// Output:
	// blockdiff: wrong passphrase (the master key did not decrypt)
	// <nil> true
}

// buffer is an io.WriterAt over a fixed slice, like a device.
type buffer struct{ b []byte }

func (w *buffer) WriteAt(p []byte, off int64) (int, error) { return copy(w.b[off:], p), nil }

// ExampleParseRBDDiff reads the hints that `rbd diff --from-snap A pool/image@B
// --format=json` prints.
func ExampleParseRBDDiff() {
	hints, err := blockdiff.ParseRBDDiff(strings.NewReader(
		`[{"offset":0,"length":4194304,"exists":"true"},{"offset":8388608,"length":4194304,"exists":"false"}]`))
	if err != nil {
		log.Fatal(err)
	}
	for _, h := range hints {
		fmt.Println(h.Offset, h.Length, h.Exists)
	}
	// Output:
	// 0 4194304 true
	// 8388608 4194304 false
}
