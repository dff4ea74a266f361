package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/internal/cli"
	"github.com/cairn-backup/cairn/internal/repocli"
	"github.com/cairn-backup/cairn/pgdump"
)

// app holds the global flags and what the commands share: the repository
// layer of every cairn binary (internal/repocli) and the server flags.
type app struct {
	repocli.Repo
	dsn    string
	binDir string
}

// run executes one command line and returns the exit code.
func run(ctx context.Context, args []string, sio cli.IO) int {
	a := &app{}
	a.IO = sio
	return a.Execute(ctx, a.rootCmd(), args)
}

// rootCmd builds the command tree.
func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "cairn-pg",
		Short: "PostgreSQL logical dumps streamed into a deduplicating repository",
		Long: "cairn-pg streams pg_dumpall (or pg_dump -Fc per database) into a blockdiff repository on any\n" +
			"objstore URL (file://, s3://, mem://), restores dumps to stdout or into psql / pg_restore, and\n" +
			"lists them. --repo defaults to $CAIRN_REPO; the passphrase comes from $CAIRN_PASSWORD or\n" +
			"--password-file; the server from the libpq environment and --dsn / $CAIRN_PG_DSN.",
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error { return a.setup() },
	}
	a.AddFlags(root)
	pf := root.PersistentFlags()
	pf.StringVar(&a.binDir, "bindir", "", "directory of pg_dumpall, pg_dump, psql, pg_restore (default $PG_BINDIR, else $PATH)")
	a.AddCommands(root, repocli.Mount{Kind: blockdiff.KindStream, PrintVersions: printDumps,
		LabelFlags: []repocli.LabelFlag{{Name: "cluster", Label: pgdump.LabelCluster, Usage: "only dumps of this cluster"}}})
	root.AddCommand(a.dumpCmd(), a.restoreCmd(), a.VersionCmd())
	return root
}

// setup configures logging once the flags are parsed.
func (a *app) setup() error {
	if err := a.Setup(); err != nil {
		return err
	}
	if a.binDir == "" {
		a.binDir = a.IO.Getenv("PG_BINDIR")
	}
	return nil
}

// conn is the server connection from the flags and the environment.
func (a *app) conn(dsn string) pgdump.Conn {
	return pgdump.Conn{DSN: dsn, BinDir: a.binDir}
}
