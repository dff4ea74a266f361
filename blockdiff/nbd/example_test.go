package nbd_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/blockdiff/nbd"
	"github.com/cairn-backup/cairn/objstore"
)

// ExampleServeVersions serves a repository's versions over NBD until
// interrupted, as cairn-block nbd does. A client reads a version by its ID:
//
//	qemu-img convert -O raw nbd://127.0.0.1:10809/VERSION out.img
func ExampleServeVersions() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	store, err := objstore.Open(ctx, "file:///var/backups/cairn")
	if err != nil {
		log.Fatal(err)
	}
	repo, err := blockdiff.Open(ctx, store, blockdiff.Options{Passphrase: []byte(os.Getenv("CAIRN_PASSWORD"))})
	if err != nil {
		log.Fatal(err)
	}
	defer repo.Close()
	l, err := net.Listen("tcp", "127.0.0.1:10809")
	if err != nil {
		log.Fatal(err)
	}
	if err := nbd.ServeVersions(ctx, l, repo, blockdiff.ReaderOptions{CacheBlocks: 8}, nil); err != nil {
		log.Fatal(err)
	}
}

// ExampleVersions opens a version as the NBD server does for a client that
// names it: an export reads the version's bytes at any offset.
func ExampleVersions() {
	ctx := context.Background()
	store, _ := objstore.Open(ctx, "mem://example-nbd-versions")
	repo, err := blockdiff.Init(ctx, store, blockdiff.InitConfig{BlockSize: 64 << 10}, blockdiff.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer repo.Close()
	image := bytes.Repeat([]byte("cairn "), 50000)
	v, err := repo.Backup(ctx, blockdiff.NewSource(bytes.NewReader(image), int64(len(image))), blockdiff.BackupOptions{Volume: "vol"})
	if err != nil {
		log.Fatal(err)
	}

	exports := nbd.Versions(ctx, repo, blockdiff.ReaderOptions{})
	names, _ := exports.List(ctx)
	fmt.Println("exports:", len(names), names[0] == v.ID)
	exp, err := exports.Open(ctx, v.ID)
	if err != nil {
		log.Fatal(err)
	}
	defer exp.Close()
	b := make([]byte, 11)
	if _, err := exp.ReadAt(b, 65536+2); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("size %d, at 65538: %q\n", exp.Size(), b)
	// Output:
	// exports: 1 true
	// size 300000, at 65538: "cairn cairn"
}
