package pgdump_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/objstore"
	"github.com/cairn-backup/cairn/pgdump"
)

// ExampleDump streams pg_dumpall of the server that the libpq environment
// (PGHOST, PGUSER, PGPASSWORD, ...) names into a repository, and loads the
// dump into another server. It needs a server, so it is compiled, not run.
func ExampleDump() {
	ctx := context.Background()
	store, err := objstore.Open(ctx, "file:///var/backups/cairn")
	if err != nil {
		log.Fatal(err)
	}
	repo, err := blockdiff.Open(ctx, store, blockdiff.Options{Passphrase: []byte(os.Getenv("CAIRN_PASSWORD"))})
	if err != nil {
		log.Fatal(err)
	}
	defer repo.Close()

	versions, err := pgdump.Dump(ctx, repo, pgdump.DumpOptions{
		Conn:    pgdump.Conn{BinDir: "/usr/lib/postgresql/15/bin"},
		Cluster: "main",
	})
	if err != nil {
		log.Fatal(err) // a failed pg_dumpall: the error ends with its stderr
	}
	v := versions[0]
	fmt.Println(v.ID, v.Size, "bytes dumped,", v.Stats.BytesWritten, "stored")

	report, err := pgdump.Restore(ctx, repo, v.ID, pgdump.RestoreOptions{
		Conn: pgdump.Conn{DSN: "host=/run/postgresql dbname=postgres"},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(report.Errors), "errors while loading")
}
