// Command cairn-synth writes a synthetic blockdiff repository of N blocks and
// V versions through the format's own encoders (blockdiff.Synthesize), for
// the benchmarks of scale in bench/ (bench/README.md, "Repositories at
// scale"):
//
//	go run ./bench/cmd/cairn-synth -repo /path/to/new-repo -blocks 1000000 -versions 1000 \
//	    [-uncompacted] [-data-every 1] [-encrypt] [-image FILE] [-new-image FILE]
//
// The repository must not exist. Index and manifests are real; data objects
// are placeholders (an empty plaintext, sealed) except the 16 blocks of the
// image version of volume "img", whose image -image writes (a backup of it
// dedups every block); -new-image writes an image of the same size with new
// blocks. The passphrase of -encrypt comes from $CAIRN_PASSWORD.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"time"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/objstore"
)

func main() {
	repo := flag.String("repo", "", "directory of the new repository (file://)")
	blocks := flag.Int64("blocks", 1_000_000, "distinct blocks (index entries)")
	versions := flag.Int("versions", 1000, "version manifests")
	volumes := flag.Int("volumes", 10, "volumes the versions are spread over")
	refs := flag.Int("refs", 32768, "references per version")
	imageBlocks := flag.Int("image-blocks", 16, "real blocks of the image version")
	uncompacted := flag.Bool("uncompacted", false, "write the index as uncompacted segments (as format 1/2 backups left it)")
	dataEvery := flag.Int64("data-every", 1, "write a placeholder data object for every Nth block only (inodes)")
	encrypt := flag.Bool("encrypt", false, "encrypt (passphrase from $CAIRN_PASSWORD)")
	image := flag.String("image", "", "write the image version's image here")
	newImage := flag.String("new-image", "", "write an image of the same size with new blocks here")
	flag.Parse()
	if *repo == "" {
		log.Fatal("cairn-synth: -repo is required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := os.MkdirAll(*repo, 0o755); err != nil {
		log.Fatal(err)
	}
	abs, err := filepath.Abs(*repo)
	if err != nil {
		log.Fatal(err)
	}
	store, err := objstore.Open(ctx, "file://"+abs)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	ic := blockdiff.InitConfig{}
	opts := blockdiff.Options{}
	if *encrypt {
		ic.Encrypt, opts.Passphrase = true, []byte(os.Getenv("CAIRN_PASSWORD"))
	}
	r, err := blockdiff.Init(ctx, store, ic, opts)
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	t0 := time.Now()
	last := time.Now()
	res, err := blockdiff.Synthesize(ctx, r, blockdiff.SynthOptions{
		Blocks: *blocks, Versions: *versions, Volumes: *volumes, RefsPerVersion: *refs,
		ImageBlocks: *imageBlocks, Uncompacted: *uncompacted, DataEvery: *dataEvery,
		DataDir: filepath.Join(abs, "data"),
		Progress: func(what string, done, total int64) {
			if time.Since(last) > 10*time.Second {
				last = time.Now()
				log.Printf("%s: %d/%d (%s)", what, done, total, time.Since(t0).Round(time.Second))
			}
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	bs := r.BlockSize()
	for _, img := range []struct {
		path string
		seed uint64
	}{{*image, 0}, {*newImage, 1}} {
		if img.path == "" {
			continue
		}
		if err := os.WriteFile(img.path, blockdiff.SynthImage(img.seed, *imageBlocks, bs), 0o644); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Printf("blocks=%d versions=%d data_objects=%d index_objects=%d image_version=%s seconds=%.1f\n",
		res.Entries, res.Versions, res.DataObjects, res.IndexKeys, res.ImageVersion, time.Since(t0).Seconds())
}
