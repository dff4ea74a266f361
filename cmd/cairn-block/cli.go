package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/internal/cli"
	"github.com/cairn-backup/cairn/internal/repocli"
)

// app holds the global flags and what the commands share: the repository
// layer of every cairn binary (internal/repocli).
type app struct {
	repocli.Repo
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
		Use:   "cairn-block",
		Short: "Block-level, deduplicating backups of volumes (Benji's verbs)",
		Long: "cairn-block backs up volume images (files, block devices, rbd:// images) into a blockdiff\n" +
			"repository on any objstore URL (file://, s3://, rados://), restores them verified, and manages\n" +
			"versions. --repo defaults to $CAIRN_REPO; the passphrase comes from $CAIRN_PASSWORD or\n" +
			"--password-file.",
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error { return a.Setup() },
	}
	a.AddFlags(root)
	a.AddCommands(root, repocli.Mount{})
	root.AddCommand(a.backupCmd(), a.restoreCmd(), a.rmCmd(),
		a.protectCmd(true), a.protectCmd(false), a.labelCmd(), a.VersionCmd(), a.repairCmd())
	a.addCephCommands(root)        // rbd:// for backup and restore, backup-all (rbdcmd.go)
	a.addMaintenanceCommands(root) // locks, unlock, storage-stats, nbd (maintenance.go)
	return root
}
