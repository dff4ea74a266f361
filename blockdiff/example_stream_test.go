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

// ExampleRepository_BackupStream stores a stream twice: the second copy,
// which changed in one place, stores only the chunks around the change.
func ExampleRepository_BackupStream() {
	ctx := context.Background()
	store, err := objstore.Open(ctx, "mem://example-stream")
	if err != nil {
		log.Fatal(err)
	}
	small := blockdiff.ChunkerParams{Algorithm: blockdiff.ChunkerJC, Min: 4 << 10, Avg: 16 << 10, Max: 64 << 10}
	repo, err := blockdiff.Init(ctx, store, blockdiff.InitConfig{Chunker: &small}, blockdiff.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer repo.Close()

	var dump strings.Builder
	for i := range 40000 {
		fmt.Fprintf(&dump, "%d\taccount %d\t%d\n", i, i*7919%10007, i%97)
	}
	day1 := dump.String()
	day2 := strings.Replace(day1, "20000\taccount", "20000\tACCOUNT", 1)

	v1, err := repo.BackupStream(ctx, strings.NewReader(day1), blockdiff.StreamOptions{Volume: "pg-main"})
	if err != nil {
		log.Fatal(err)
	}
	v2, err := repo.BackupStream(ctx, strings.NewReader(day2), blockdiff.StreamOptions{Volume: "pg-main"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(v1.Kind, v1.Status, v1.Size == int64(len(day1)))
	fmt.Println("day 2 stores under 10%:", v2.Stats.BytesWritten*10 < v1.Stats.BytesWritten)

	var out bytes.Buffer
	if err := repo.RestoreStream(ctx, v2.ID, &out, blockdiff.StreamRestoreOptions{}); err != nil {
		log.Fatal(err)
	}
	fmt.Println("identical:", out.String() == day2)
	// Output:
	// stream valid true
	// day 2 stores under 10%: true
	// identical: true
}
