package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/internal/cli"
)

// repairCmd is restic's repair family; today it has index.
func (a *app) repairCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "repair index",
		Short: "Repair a damaged repository (index: rebuild the index from the versions and data/)",
		Args:  cli.Args(cobra.NoArgs),
	}
	cmd.AddCommand(a.repairIndexCmd())
	return cmd
}

func (a *app) repairIndexCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "index",
		Short: "Rebuild the index from the version manifests and the listing of data/",
		Long: "Rebuild the index (restic's repair index): new index segments list every data object that\n" +
			"exists and that a valid version references; then every old segment, readable or damaged, is\n" +
			"deleted. It holds the exclusive lock (backups wait) and deletes no data. Damaged version\n" +
			"manifests are reported: remove them with rm.",
		Args: cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.WithRepo(cmd.Context(), func(r *blockdiff.Repository) error {
				res, err := r.RepairIndex(cmd.Context(), blockdiff.RepairIndexOptions{})
				if err != nil {
					return err
				}
				if a.JSON {
					return a.WriteJSON(res)
				}
				fmt.Fprintf(a.IO.Out, "index rebuilt: %d segments (%d damaged) -> %d; %d entries of %d data objects (%d left out: no valid version references them)\n",
					res.SegmentsBefore, len(res.DamagedSegments), res.SegmentsAfter, res.IndexEntries, res.Objects, res.Unindexed)
				if len(res.DamagedVersions) > 0 {
					fmt.Fprintf(a.IO.Out, "damaged versions (remove them with rm): %s\n", strings.Join(res.DamagedVersions, " "))
				}
				return nil
			})
		},
	}
}
