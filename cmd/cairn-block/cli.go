package main

import (
	"context"

	"github.com/cairn-backup/cairn/internal/cli"
	"github.com/spf13/cobra"
)

// app holds the global flags and what the commands share: the repository
// flags of every cairn binary (lock options in Repo.Options, maintenance.go).
type app struct {
	cli.Repo
}

// run executes one command line and returns the exit code.
func run(ctx context.Context, args []string, sio cli.IO) int {
	a := &app{Repo: cli.Repo{IO: sio}}
	return a.Execute(ctx, a.rootCmd(), args)
}

// rootCmd builds the command tree.
func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "cairn-block",
		Short: "Block-level, deduplicating backups of volumes (Benji's verbs)",
		Long: "cairn-block backs up volume images (files, block devices) into a blockdiff repository on\n" +
			"any objstore URL (file://, s3://, mem://), restores them verified, and manages versions.\n" +
			"--repo defaults to $CAIRN_REPO; the passphrase comes from $CAIRN_PASSWORD or --password-file.",
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error { return a.Setup() },
	}
	a.AddFlags(root, "log level: debug, info, warn, error")
	root.AddCommand(a.initCmd(), a.backupCmd(), a.restoreCmd(), a.lsCmd(), a.rmCmd(),
		a.protectCmd(true), a.protectCmd(false), a.labelCmd())
	a.addCephCommands(root)        // rbd:// for backup and restore, backup-all (rbdcmd.go)
	a.addMaintenanceCommands(root) // scrub, enforce, cleanup, locks, nbd... (maintenance.go)
	return root
}
