package repocli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/internal/cli"
	"github.com/cairn-backup/cairn/retention"
)

// LabelFlag is a binary's shorthand for a label filter, such as cairn-pg's
// --cluster NAME for --label cairn.pg/cluster=NAME.
type LabelFlag struct {
	Name  string // flag name
	Label string // the label it filters on
	Usage string
}

// Mount says how a binary mounts the shared repository commands.
type Mount struct {
	// Kind limits ls to versions of this kind ("" for all).
	Kind blockdiff.Kind
	// LabelFlags are the binary's label shorthands for ls and enforce.
	LabelFlags []LabelFlag
	// PrintVersions prints ls's table for people; nil: PrintVersions.
	PrintVersions func(io.Writer, []*blockdiff.Version) error
	// Enforce runs enforce's policy over the repository in place of
	// Repository.EnforcePolicy, for binaries that remove more than versions
	// (cairn-kube deletes the VolumeSnapshots of the versions it removes).
	Enforce func(ctx context.Context, repo *blockdiff.Repository, policy retention.Policy, opts blockdiff.EnforceOptions) (*blockdiff.EnforceResult, error)
}

// AddCommands adds the commands every repository binary shares (init, ls,
// enforce, cleanup, scrub, deep-scrub) to root.
func (r *Repo) AddCommands(root *cobra.Command, m Mount) {
	if m.PrintVersions == nil {
		m.PrintVersions = PrintVersions
	}
	root.AddCommand(r.initCmd(), r.lsCmd(m), r.enforceCmd(m), r.cleanupCmd(), r.scrubCmd(false), r.scrubCmd(true))
}

// filterFlags are --volume, --label and the binary's shorthands.
type filterFlags struct {
	volume    string
	labels    []string
	shorthand map[string]*string // label -> flag value
}

func (f *filterFlags) add(cmd *cobra.Command, m Mount) {
	fs := cmd.Flags()
	fs.StringVar(&f.volume, "volume", "", "only versions of this volume")
	fs.StringArrayVar(&f.labels, "label", nil, "only versions with label k=v (repeatable)")
	f.shorthand = map[string]*string{}
	for _, lf := range m.LabelFlags {
		f.shorthand[lf.Label] = fs.String(lf.Name, "", lf.Usage)
	}
}

func (f *filterFlags) filter() (blockdiff.Filter, error) {
	lm, err := ParseLabels(f.labels)
	if err != nil {
		return blockdiff.Filter{}, err
	}
	for label, v := range f.shorthand {
		if *v != "" {
			lm[label] = *v
		}
	}
	return blockdiff.Filter{Volume: f.volume, Labels: lm}, nil
}

func (r *Repo) initCmd() *cobra.Command {
	var encrypt, createBucket bool
	var blockSize string
	cmd := &cobra.Command{
		Use:   "init [--encrypt] [--block-size N] [--create-bucket]",
		Short: "Create a repository",
		Args:  cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			bs, err := ParseBlockSize(blockSize)
			if err != nil {
				return err
			}
			return r.Init(cmd.Context(), blockdiff.InitConfig{BlockSize: bs, Encrypt: encrypt}, createBucket)
		},
	}
	cmd.Flags().BoolVar(&encrypt, "encrypt", false, "encrypt with a key wrapped by the passphrase")
	cmd.Flags().StringVar(&blockSize, "block-size", "4MiB", "default block size of block versions (64KiB..32MiB)")
	cmd.Flags().BoolVar(&createBucket, "create-bucket", false, "create the S3 bucket when it does not exist")
	return cmd
}

func (r *Repo) lsCmd(m Mount) *cobra.Command {
	var ff filterFlags
	cmd := &cobra.Command{
		Use:   "ls [--volume V] [--label k=v]...",
		Short: "List versions, oldest first",
		Args:  cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := ff.filter()
			if err != nil {
				return err
			}
			return r.WithRepo(cmd.Context(), func(repo *blockdiff.Repository) error {
				vs, err := repo.List(cmd.Context(), f)
				if err != nil {
					return err
				}
				if m.Kind != "" {
					vs = slices.DeleteFunc(vs, func(v *blockdiff.Version) bool { return v.Kind != m.Kind })
				}
				if r.JSON {
					return r.WriteJSON(VersionsJSON(vs))
				}
				return m.PrintVersions(r.IO.Out, vs)
			})
		},
	}
	ff.add(cmd, m)
	return cmd
}

// PrintVersions prints versions for people.
func PrintVersions(w io.Writer, vs []*blockdiff.Version) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tVOLUME\tKIND\tCREATED\tSIZE\tSTATUS\tPROTECTED\tLABELS")
	for _, v := range vs {
		var ls []string
		for k, val := range v.Labels {
			ls = append(ls, k+"="+val)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%v\t%s\n", v.ID, v.Volume, v.Kind, v.Created.Local().Format(time.DateTime),
			cli.HumanBytes(v.Size), v.Status, v.Protected, strings.Join(slices.Sorted(slices.Values(ls)), ","))
	}
	return tw.Flush()
}

func (r *Repo) enforceCmd(m Mount) *cobra.Command {
	var ff filterFlags
	var tz string
	var dryRun bool
	var grace, keepWithin time.Duration
	cmd := &cobra.Command{
		Use:   "enforce {RULES | --keep-within DURATION} [--volume V] [--label k=v]... [--dry-run]",
		Short: "Remove the versions a retention policy does not keep, per volume",
		Long: "Apply a retention policy to the versions of each volume: Benji rules such as latest7 or\n" +
			"latest3,hours24,days30,months3, or a zrepl grid such as '1x1h(keep=all) | 24x1h | 30x1d',\n" +
			"and/or --keep-within 720h, Velero's TTL: keep what is younger than that (with RULES, a\n" +
			"version either keeps stays). Protected, invalid (scrubbed) and incomplete versions are\n" +
			"neither counted nor removed; failed backups (interrupted or in error) are not counted and\n" +
			"are removed once older than --grace. Data is freed by cleanup.",
		Args: cli.Args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, as []string) error {
			f, err := ff.filter()
			if err != nil {
				return err
			}
			loc, err := time.LoadLocation(tz)
			if err != nil {
				return cli.Usagef("--tz %q: %v", tz, err)
			}
			if grace < 0 {
				return cli.Usagef("--grace %s: want a duration >= 0", grace)
			}
			policy, err := enforcePolicy(as, keepWithin, loc)
			if err != nil {
				return err
			}
			g := grace
			if g == 0 {
				g = -1 // no grace at all: the library's zero means the default
			}
			enforce := m.Enforce
			if enforce == nil {
				enforce = func(ctx context.Context, repo *blockdiff.Repository, p retention.Policy, o blockdiff.EnforceOptions) (*blockdiff.EnforceResult, error) {
					return repo.EnforcePolicy(ctx, p, o)
				}
			}
			return r.WithRepo(cmd.Context(), func(repo *blockdiff.Repository) error {
				res, err := enforce(cmd.Context(), repo, policy, blockdiff.EnforceOptions{
					Filter: f, DryRun: dryRun, Location: loc, FailedGrace: g})
				if res == nil {
					return err
				}
				r.RecordEnforce(res)
				var werr error
				if r.JSON {
					werr = r.WriteJSON(res)
				} else {
					werr = PrintEnforce(r.IO.Out, res)
				}
				return errors.Join(err, werr)
			})
		},
	}
	ff.add(cmd, m)
	fs := cmd.Flags()
	fs.BoolVar(&dryRun, "dry-run", false, "say what would be removed and why the rest is kept; remove nothing")
	fs.StringVar(&tz, "tz", "Local", "time zone of Benji's calendar categories (days, weeks, ...)")
	fs.DurationVar(&grace, "grace", blockdiff.DefaultGrace, "keep failed backups younger than this (0: none)")
	fs.DurationVar(&keepWithin, "keep-within", 0, "keep versions younger than this (Velero's TTL, e.g. 720h), alone or besides RULES")
	return cmd
}

// enforcePolicy is enforce's policy: RULES, --keep-within, or both (a
// version either keeps stays).
func enforcePolicy(as []string, keepWithin time.Duration, loc *time.Location) (retention.Policy, error) {
	if keepWithin < 0 {
		return nil, cli.Usagef("--keep-within %s: want a duration > 0", keepWithin)
	}
	var ps []retention.Policy
	if len(as) == 1 {
		p, err := retention.Parse(as[0], loc)
		if err != nil {
			return nil, cli.UsageError{Err: fmt.Errorf("enforce: %w", err)}
		}
		ps = append(ps, p)
	}
	if keepWithin > 0 {
		p, err := retention.Within(keepWithin)
		if err != nil {
			return nil, cli.UsageError{Err: fmt.Errorf("enforce: %w", err)}
		}
		ps = append(ps, p)
	}
	switch len(ps) {
	case 0:
		return nil, cli.Usagef("enforce: give RULES (latest7, days30,months3, ...) or --keep-within DURATION")
	case 1:
		return ps[0], nil
	}
	return retention.Union(ps...), nil
}

// PrintEnforce prints enforce's decisions for people.
func PrintEnforce(w io.Writer, res *blockdiff.EnforceResult) error {
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
			if len(d.Reasons) > 0 {
				why = strings.Join(d.Reasons, "; ")
			}
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

func (r *Repo) cleanupCmd() *cobra.Command {
	var grace time.Duration
	var dryRun bool
	var tempDir string
	cmd := &cobra.Command{
		Use:   "cleanup [--grace DURATION] [--dry-run]",
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
			return r.WithRepo(cmd.Context(), func(repo *blockdiff.Repository) error {
				res, err := repo.Cleanup(cmd.Context(), blockdiff.CleanupOptions{Grace: g, DryRun: dryRun, TempDir: tempDir})
				if err != nil {
					return err
				}
				r.RecordCleanup(res)
				if r.JSON {
					return r.WriteJSON(res)
				}
				verb := "deleted"
				if dryRun {
					verb = "would delete"
				}
				_, err = fmt.Fprintf(r.IO.Out, "%d objects (%s), %d referenced, %d young; %s %d (%s); index segments %d -> %d\n",
					res.Objects, cli.HumanBytes(res.StoredBytes), res.Referenced, res.Young, verb, res.Deleted,
					cli.HumanBytes(res.DeletedBytes), res.SegmentsBefore, res.SegmentsAfter)
				return err
			})
		},
	}
	cmd.Flags().DurationVar(&grace, "grace", blockdiff.DefaultGrace, "keep unreferenced objects younger than this (0: none)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "say what would be deleted; delete nothing")
	cmd.Flags().StringVar(&tempDir, "temp-dir", "", "local directory for the sorted runs of referenced objects and the listing of data/ (about 40 bytes per reference; default $TMPDIR)")
	return cmd
}

func (r *Repo) scrubCmd(deep bool) *cobra.Command {
	name, short := "scrub", "Check that every block of versions exists with the expected size"
	if deep {
		name, short = "deep-scrub", "Read, decrypt, decompress and hash every block of versions"
	}
	var all bool
	var pct, vpct float64
	var tempDir string
	cmd := &cobra.Command{
		Use:   name + " [VERSION...|--all [--versions-percent P]] [--percent P]",
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
			return r.WithRepo(cmd.Context(), func(repo *blockdiff.Repository) error {
				bar := r.NewProgress(name)
				rep, err := repo.Scrub(cmd.Context(), blockdiff.ScrubOptions{Deep: deep, Versions: as, All: all,
					Percent: pct, VersionPercent: vpct, Progress: bar.Bytes, TempDir: tempDir})
				bar.Finish()
				if err != nil {
					return err
				}
				r.RecordScrub(rep)
				if r.JSON {
					err = r.WriteJSON(rep)
				} else {
					err = PrintScrub(r.IO.Out, rep)
				}
				if err != nil {
					return err
				}
				if !rep.OK() {
					return fmt.Errorf("%s: %d damaged blocks; invalid versions: %s; %d damaged version manifests, %d damaged index segments",
						name, len(rep.Failures), strings.Join(append(rep.Invalid, notIn(rep.Marked, rep.Invalid)...), " "),
						len(rep.DamagedVersions), len(rep.DamagedSegments))
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "check every valid version")
	cmd.Flags().Float64Var(&pct, "percent", 0, "check a random sample of this percentage of the blocks (0 or 100: all)")
	cmd.Flags().Float64Var(&vpct, "versions-percent", 0, "with --all: check a random sample of this percentage of the valid versions, at least one (Benji's -P)")
	cmd.Flags().StringVar(&tempDir, "temp-dir", "", "local directory for the sorted runs of referenced objects (default $TMPDIR)")
	return cmd
}

// notIn returns the elements of a that are not in b.
func notIn(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// PrintScrub prints a scrub report for people.
func PrintScrub(w io.Writer, rep *blockdiff.ScrubReport) error {
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
	if len(rep.DamagedVersions) > 0 {
		fmt.Fprintln(w, "damaged version manifests (remove them with rm):", strings.Join(rep.DamagedVersions, " "))
	}
	if len(rep.DamagedSegments) > 0 {
		fmt.Fprintln(w, "damaged index segments (cleanup or repair index replaces them):", strings.Join(rep.DamagedSegments, " "))
	}
	_, err := fmt.Fprintln(w, "ok:", rep.OK())
	return err
}
