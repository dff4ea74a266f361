package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/internal/cli"
	"github.com/cairn-backup/cairn/internal/nbd"
	"github.com/cairn-backup/cairn/retention"
	"github.com/spf13/cobra"
)

// addMaintenanceCommands adds the commands that keep a repository healthy
// (scrub, deep-scrub, enforce, cleanup, locks, unlock, storage-stats) and the
// NBD export, with the lock flags they and backup share.
func (a *app) addMaintenanceCommands(root *cobra.Command) {
	pf := root.PersistentFlags()
	pf.DurationVar(&a.Options.LockTTL, "lock-ttl", blockdiff.DefaultLockTTL, "repository locks of this process expire unless refreshed within this time")
	pf.DurationVar(&a.Options.LockWait, "lock-wait", blockdiff.DefaultLockWait, "how long to wait for a conflicting repository lock (backup waits for cleanup and back)")
	root.AddCommand(a.scrubCmd(false), a.scrubCmd(true), a.enforceCmd(), a.cleanupCmd(), a.locksCmd(),
		a.unlockCmd(), a.storageStatsCmd(), a.nbdCmd())
}

func (a *app) scrubCmd(deep bool) *cobra.Command {
	name, short := "scrub", "Check that every block of versions exists with the expected size"
	if deep {
		name, short = "deep-scrub", "Read, decrypt, decompress and hash every block of versions"
	}
	var all, asJSON bool
	var pct, vpct float64
	cmd := &cobra.Command{
		Use:   name + " [VERSION...|--all [--versions-percent P]] [--percent P] [--json]",
		Short: short,
		Long: short + ".\nA version with a missing or corrupt block is marked invalid, and so is every other version\n" +
			"sharing that block. Exit code 1 when a checked version is not valid.",
		Args: cli.Args(cobra.ArbitraryArgs),
		RunE: func(cmd *cobra.Command, as []string) error {
			if !all && len(as) == 0 {
				return cli.Usagef("%s: name versions or use --all", name)
			}
			if pct < 0 || pct > 100 {
				return cli.Usagef("--percent %v: want 0..100", pct)
			}
			if vpct < 0 || vpct > 100 {
				return cli.Usagef("--versions-percent %v: want 0..100", vpct)
			}
			if vpct != 0 && !all {
				return cli.Usagef("--versions-percent samples the versions of --all")
			}
			return a.WithRepo(cmd.Context(), func(r *blockdiff.Repository) error {
				bar := cli.NewProgress(a.IO.Err, name)
				rep, err := r.Scrub(cmd.Context(), blockdiff.ScrubOptions{Deep: deep, Versions: as, All: all,
					Percent: pct, VersionPercent: vpct, Progress: bar.Bytes})
				bar.Finish()
				if err != nil {
					return err
				}
				a.RecordScrub(rep)
				if asJSON {
					err = cli.WriteJSON(a.IO.Out, rep)
				} else {
					err = printScrub(a.IO.Out, rep)
				}
				if err != nil {
					return err
				}
				if !rep.OK() {
					return fmt.Errorf("%s: %d damaged blocks; invalid versions: %s", name, len(rep.Failures),
						strings.Join(append(rep.Invalid, notIn(rep.Marked, rep.Invalid)...), " "))
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "check every valid version")
	cmd.Flags().Float64Var(&pct, "percent", 0, "check a random sample of this percentage of the blocks (0 or 100: all)")
	cmd.Flags().Float64Var(&vpct, "versions-percent", 0, "with --all: check a random sample of this percentage of the valid versions, at least one (Benji's -P)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

// notIn returns the elements of a that are not in b.
func notIn(a, b []string) []string {
	var out []string
	for _, x := range a {
		found := false
		for _, y := range b {
			found = found || x == y
		}
		if !found {
			out = append(out, x)
		}
	}
	return out
}

// printScrub prints a scrub report for people.
func printScrub(w io.Writer, rep *blockdiff.ScrubReport) error {
	fmt.Fprintf(w, "checked %d versions, %d objects, %s\n", rep.VersionsChecked, rep.ObjectsChecked, cli.HumanBytes(rep.BytesChecked))
	if len(rep.Failures) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "VERSION\tVOLUME\tOFFSET\tOBJECT\tPROBLEM")
		for _, f := range rep.Failures {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", f.Version, f.Volume, f.Offset, f.Object, f.Problem)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(rep.Marked) > 0 {
		fmt.Fprintln(w, "marked invalid:", strings.Join(rep.Marked, " "))
	}
	_, err := fmt.Fprintln(w, "ok:", rep.OK())
	return err
}

func (a *app) enforceCmd() *cobra.Command {
	var volume, tz string
	var labels []string
	var dryRun, asJSON bool
	cmd := &cobra.Command{
		Use:   "enforce RULES [--volume V] [--label k=v]... [--dry-run] [--json]",
		Short: "Remove the versions a retention policy does not keep, per volume",
		Long: "Apply a retention policy to the versions of each volume: Benji rules such as latest7 or\n" +
			"latest3,hours24,days30,months3, or a zrepl grid such as '1x1h(keep=all) | 24x1h | 30x1d'.\n" +
			"Protected, invalid and incomplete versions are neither counted nor removed. Data is freed by cleanup.",
		Args: cli.Args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, as []string) error {
			lm, err := cli.ParseLabels(labels)
			if err != nil {
				return err
			}
			loc, err := time.LoadLocation(tz)
			if err != nil {
				return cli.Usagef("--tz %q: %v", tz, err)
			}
			return a.WithRepo(cmd.Context(), func(r *blockdiff.Repository) error {
				res, err := r.Enforce(cmd.Context(), as[0], blockdiff.EnforceOptions{
					Filter: blockdiff.Filter{Volume: volume, Labels: lm}, DryRun: dryRun, Location: loc})
				var pe *retention.ParseError
				if errors.As(err, &pe) {
					return cli.UsageError{Err: err}
				}
				if res != nil {
					a.RecordEnforce(res)
					var werr error
					if asJSON {
						werr = cli.WriteJSON(a.IO.Out, res)
					} else {
						werr = printEnforce(a.IO.Out, res)
					}
					if err == nil {
						err = werr
					}
				}
				return err
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&volume, "volume", "", "only this volume")
	f.StringArrayVar(&labels, "label", nil, "only versions with label k=v (repeatable)")
	f.BoolVar(&dryRun, "dry-run", false, "say what would be removed and why the rest is kept; remove nothing")
	f.BoolVar(&asJSON, "json", false, "print the decisions as JSON")
	f.StringVar(&tz, "tz", "Local", "time zone of Benji's calendar categories (days, weeks, ...)")
	return cmd
}

// printEnforce prints enforce's decisions for people.
func printEnforce(w io.Writer, res *blockdiff.EnforceResult) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	remove := "remove"
	if res.DryRun {
		remove = "would remove"
	}
	fmt.Fprintln(tw, "VOLUME\tVERSION\tCREATED\tDECISION\tWHY")
	for _, v := range res.Volumes {
		for _, d := range v.Kept {
			fmt.Fprintf(tw, "%s\t%s\t%s\tkeep\t%s\n", v.Volume, d.ID, d.Created.Local().Format(time.DateTime), strings.Join(d.Reasons, "; "))
		}
		for _, d := range v.Removed {
			why := "no rule keeps it"
			if d.Error != "" {
				why = "FAILED: " + d.Error
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", v.Volume, d.ID, d.Created.Local().Format(time.DateTime), remove, why)
		}
		for _, d := range v.Skipped {
			fmt.Fprintf(tw, "%s\t%s\t%s\tskip\t%s\n", v.Volume, d.ID, d.Created.Local().Format(time.DateTime), strings.Join(d.Reasons, "; "))
		}
	}
	return tw.Flush()
}

func (a *app) cleanupCmd() *cobra.Command {
	var grace time.Duration
	var dryRun, asJSON bool
	cmd := &cobra.Command{
		Use:   "cleanup [--grace DURATION] [--dry-run] [--json]",
		Short: "Delete data no version references (older than the grace period) and compact the index",
		Long: "Delete the data objects that no version references and that are older than --grace, and\n" +
			"compact the index. Cleanup holds the repository's exclusive lock: it waits for running\n" +
			"backups (up to --lock-wait) and new backups wait for it.",
		Args: cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if grace < 0 {
				return cli.Usagef("--grace %s: want a duration >= 0", grace)
			}
			g := grace
			if g == 0 {
				g = -1 // no grace at all: the library's zero means the default
			}
			return a.WithRepo(cmd.Context(), func(r *blockdiff.Repository) error {
				res, err := r.Cleanup(cmd.Context(), blockdiff.CleanupOptions{Grace: g, DryRun: dryRun})
				if err != nil {
					return err
				}
				a.RecordCleanup(res)
				if asJSON {
					return cli.WriteJSON(a.IO.Out, res)
				}
				verb := "deleted"
				if dryRun {
					verb = "would delete"
				}
				_, err = fmt.Fprintf(a.IO.Out, "%d objects (%s), %d referenced, %d young; %s %d (%s); index segments %d -> %d\n",
					res.Objects, cli.HumanBytes(res.StoredBytes), res.Referenced, res.Young, verb, res.Deleted,
					cli.HumanBytes(res.DeletedBytes), res.SegmentsBefore, res.SegmentsAfter)
				return err
			})
		},
	}
	cmd.Flags().DurationVar(&grace, "grace", blockdiff.DefaultGrace, "keep unreferenced objects younger than this (0: none)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "say what would be deleted; delete nothing")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func (a *app) locksCmd() *cobra.Command {
	var asJSON bool
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
				if asJSON {
					if locks == nil {
						locks = []blockdiff.LockInfo{}
					}
					return cli.WriteJSON(a.IO.Out, locks)
				}
				return printLocks(a.IO.Out, locks)
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
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
	var asJSON bool
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
				if asJSON {
					return cli.WriteJSON(a.IO.Out, st)
				}
				tw := tabwriter.NewWriter(a.IO.Out, 0, 4, 2, ' ', 0)
				fmt.Fprintf(tw, "versions\t%d (%d valid, %d invalid, %d incomplete, %d protected)\n", st.Versions,
					st.ValidVersions, st.InvalidVersions, st.IncompleteVersions, st.ProtectedVersions)
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
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the numbers as JSON")
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
				return a.serveNBD(cmd.Context(), l, r, blockdiff.ReaderOptions{CacheBlocks: cache, AllowInvalid: allowInvalid})
			})
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:10809", "address to listen on")
	cmd.Flags().IntVar(&cache, "cache-blocks", 8, "decoded blocks cached per connection")
	cmd.Flags().BoolVar(&allowInvalid, "allow-invalid", false, "also serve versions that are not valid (damaged blocks fail their reads)")
	return cmd
}

// serveNBD serves r's versions on l until ctx ends.
func (a *app) serveNBD(ctx context.Context, l net.Listener, r *blockdiff.Repository, opts blockdiff.ReaderOptions) error {
	srv := &nbd.Server{Exports: versionExports{ctx: ctx, r: r, opts: opts}, Logger: a.Log}
	return srv.Serve(ctx, l)
}

// versionExports offers a repository's versions as NBD exports.
type versionExports struct {
	ctx  context.Context // the server's: blocks are read with it
	r    *blockdiff.Repository
	opts blockdiff.ReaderOptions
}

// Open opens version name for one connection.
func (e versionExports) Open(ctx context.Context, name string) (nbd.Export, error) {
	vr, err := e.r.OpenVersion(e.ctx, name, e.opts)
	if errors.Is(err, blockdiff.ErrVersionNotFound) {
		return nil, fmt.Errorf("%w %q", nbd.ErrUnknownExport, name)
	}
	if err != nil {
		return nil, err
	}
	return vr, nil
}

// List returns the IDs of the versions a client may open.
func (e versionExports) List(ctx context.Context) ([]string, error) {
	vs, err := e.r.List(ctx, blockdiff.Filter{})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, v := range vs {
		if v.Status == blockdiff.StatusValid || e.opts.AllowInvalid {
			out = append(out, v.ID)
		}
	}
	return out, nil
}
