package main

import (
	"fmt"
	"time"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/internal/cli"
	"github.com/cairn-backup/cairn/pgdump"
	"github.com/spf13/cobra"
)

// addRetentionCommands adds enforce and cleanup (blockdiff's, as cairn-block).
func (a *app) addRetentionCommands(root *cobra.Command) {
	root.AddCommand(a.enforceCmd(), a.cleanupCmd())
}

func (a *app) enforceCmd() *cobra.Command {
	var cluster, volume string
	var dryRun, asJSON bool
	cmd := &cobra.Command{
		Use:   "enforce RULES [--cluster NAME] [--volume V] [--dry-run] [--json]",
		Short: "Remove the dumps a retention policy does not keep (Benji's rules: latest7, days30, ...)",
		Long: "enforce evaluates RULES (e.g. latest7 or latest3,days30,months6) over the dumps of each volume\n" +
			"(pg-CLUSTER, or each database's in per-database mode) and removes the others' manifests;\n" +
			"protected versions are never removed. Their data goes at the next cleanup.",
		Args: cli.Args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, as []string) error {
			f := blockdiff.Filter{Volume: volume, Labels: map[string]string{}}
			if cluster != "" {
				f.Labels[pgdump.LabelCluster] = cluster
			}
			return a.WithRepo(cmd.Context(), func(r *blockdiff.Repository) error {
				res, err := r.Enforce(cmd.Context(), as[0], blockdiff.EnforceOptions{Filter: f, DryRun: dryRun})
				if err != nil {
					return err
				}
				a.RecordEnforce(res)
				if asJSON {
					return cli.WriteJSON(a.IO.Out, res)
				}
				for _, v := range res.Volumes {
					verb := "removed"
					if res.DryRun {
						verb = "would remove"
					}
					fmt.Fprintf(a.IO.Out, "%s: kept %d, %s %d\n", v.Volume, len(v.Kept), verb, len(v.Removed))
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&cluster, "cluster", "", "only dumps of this cluster")
	cmd.Flags().StringVar(&volume, "volume", "", "only this volume")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "say what would be removed, remove nothing")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the decisions as JSON")
	return cmd
}

func (a *app) cleanupCmd() *cobra.Command {
	var grace time.Duration
	var dryRun, asJSON bool
	cmd := &cobra.Command{
		Use:   "cleanup [--grace DURATION] [--dry-run] [--json]",
		Short: "Delete the data no version references (after the grace period)",
		Args:  cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.WithRepo(cmd.Context(), func(r *blockdiff.Repository) error {
				res, err := r.Cleanup(cmd.Context(), blockdiff.CleanupOptions{Grace: grace, DryRun: dryRun})
				if err != nil {
					return err
				}
				a.RecordCleanup(res)
				if asJSON {
					return cli.WriteJSON(a.IO.Out, res)
				}
				fmt.Fprintf(a.IO.Out, "%d objects, %d referenced, %d kept by the grace period, %d deleted (%s)\n",
					res.Objects, res.Referenced, res.Young, res.Deleted, cli.HumanBytes(res.DeletedBytes))
				return nil
			})
		},
	}
	cmd.Flags().DurationVar(&grace, "grace", 0, "keep unreferenced objects younger than this (0: blockdiff's default)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "report, delete nothing")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}
