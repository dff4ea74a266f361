package main

import (
	"fmt"
	"io"
	"net"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/blockdiff/nbd"
	"github.com/cairn-backup/cairn/internal/cli"
)

// addMaintenanceCommands adds cairn-block's own maintenance commands (locks,
// unlock, storage-stats) and the NBD export; scrub, enforce and cleanup are
// the shared ones of internal/repocli.
func (a *app) addMaintenanceCommands(root *cobra.Command) {
	root.AddCommand(a.locksCmd(),
		a.unlockCmd(), a.storageStatsCmd(), a.nbdCmd())
}

func (a *app) locksCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "locks [--json]",
		Short: "List the repository's locks",
		Args:  cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.WithRepo(cmd.Context(), func(r *blockdiff.Repository) error {
				locks, err := r.Locks(cmd.Context())
				if err != nil {
					return err
				}
				if a.JSON {
					if locks == nil {
						locks = []blockdiff.LockInfo{}
					}
					return a.WriteJSON(locks)
				}
				return printLocks(a.IO.Out, locks)
			})
		},
	}
	return cmd
}

// printLocks prints locks for people.
func printLocks(w io.Writer, locks []blockdiff.LockInfo) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LOCK\tKIND\tOP\tHOST\tPID\tAGE\tSTALE")
	for _, l := range locks {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%v\n", strings.TrimPrefix(l.Key, "locks/"), l.Kind, l.Holder.Op,
			l.Holder.Host, l.Holder.PID, l.Age.Round(time.Second), l.Stale)
	}
	return tw.Flush()
}

func (a *app) unlockCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "unlock [--force] [LOCK...]",
		Short: "Remove stale locks (with --force, live ones too: only when their holder is dead)",
		Args:  cli.Args(cobra.ArbitraryArgs),
		RunE: func(cmd *cobra.Command, as []string) error {
			return a.WithRepo(cmd.Context(), func(r *blockdiff.Repository) error {
				removed, err := r.Unlock(cmd.Context(), blockdiff.UnlockOptions{Force: force, Keys: as})
				for _, l := range removed {
					fmt.Fprintln(a.IO.Out, "removed", strings.TrimPrefix(l.Key, "locks/"), l.Kind, l.Holder.Op)
				}
				return err
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "remove live locks too")
	return cmd
}

func (a *app) storageStatsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "storage-stats [--json]",
		Short: "Objects, stored bytes and the dedup ratio of the repository",
		Args:  cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.WithRepo(cmd.Context(), func(r *blockdiff.Repository) error {
				st, err := r.StorageStats(cmd.Context())
				if err != nil {
					return err
				}
				if a.JSON {
					return a.WriteJSON(st)
				}
				tw := tabwriter.NewWriter(a.IO.Out, 0, 4, 2, ' ', 0)
				fmt.Fprintf(tw, "versions\t%d (%d valid, %d invalid, %d failed, %d incomplete, %d damaged, %d protected)\n", st.Versions,
					st.ValidVersions, st.InvalidVersions, st.FailedVersions, st.IncompleteVersions, st.DamagedVersions, st.ProtectedVersions)
				fmt.Fprintf(tw, "objects\t%d (%s stored)\n", st.Objects, cli.HumanBytes(st.StoredBytes))
				fmt.Fprintf(tw, "unreferenced\t%d (%s)\n", st.UnreferencedObjects, cli.HumanBytes(st.UnreferencedBytes))
				fmt.Fprintf(tw, "missing\t%d\n", st.MissingObjects)
				fmt.Fprintf(tw, "logical\t%s (%s sparse)\n", cli.HumanBytes(st.LogicalBytes), cli.HumanBytes(st.SparseBytes))
				fmt.Fprintf(tw, "unique\t%s\n", cli.HumanBytes(st.UniqueBytes))
				fmt.Fprintf(tw, "dedup ratio\t%.2f\n", st.DedupRatio)
				fmt.Fprintf(tw, "compression ratio\t%.2f\n", st.CompressionRatio)
				fmt.Fprintf(tw, "index segments\t%d\n", st.IndexSegments)
				return tw.Flush()
			})
		},
	}
	return cmd
}

func (a *app) nbdCmd() *cobra.Command {
	var listen string
	var cache int
	var allowInvalid bool
	cmd := &cobra.Command{
		Use:   "nbd [--listen 127.0.0.1:10809] [--cache-blocks N] [--allow-invalid]",
		Short: "Serve versions read-only over NBD (export name = version ID)",
		Long: "Serve the repository's versions read-only over the Network Block Device protocol until\n" +
			"interrupted: export name = version ID, the export list = the valid versions. Blocks are read\n" +
			"on demand, verified against their IDs, and a few are cached per connection; a connection\n" +
			"holds a shared repository lock (a cleanup waits for it; --no-lock to skip). For example:\n" +
			"  qemu-img convert -O raw nbd://127.0.0.1:10809/VERSION out.img",
		Args: cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cache < 0 {
				return cli.Usagef("--cache-blocks %d: want >= 0", cache)
			}
			return a.WithRepo(cmd.Context(), func(r *blockdiff.Repository) error {
				l, err := net.Listen("tcp", listen)
				if err != nil {
					return fmt.Errorf("nbd: %w", err)
				}
				a.Log.Info("serving versions over NBD", "listen", l.Addr().String())
				return nbd.ServeVersions(cmd.Context(), l, r, blockdiff.ReaderOptions{CacheBlocks: cache, AllowInvalid: allowInvalid}, a.Log)
			})
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:10809", "address to listen on")
	cmd.Flags().IntVar(&cache, "cache-blocks", 8, "decoded blocks cached per connection")
	cmd.Flags().BoolVar(&allowInvalid, "allow-invalid", false, "also serve versions that are not valid (damaged blocks fail their reads)")
	return cmd
}
