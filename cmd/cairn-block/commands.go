package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/internal/cli"
	"github.com/cairn-backup/cairn/internal/repocli"
)

func (a *app) backupCmd() *cobra.Command {
	var base, hintsFile, blockSize string
	var labels []string
	var verifyPct float64
	cmd := &cobra.Command{
		Use:   "backup [--base VERSION] [--hints FILE|-] [--label k=v]... [--block-size N] SOURCE VOLUME",
		Short: "Back up a file or block device as a new version of VOLUME",
		Args:  cli.Args(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, as []string) error {
			opts := blockdiff.BackupOptions{Volume: as[1], Base: base, VerifyPercent: verifyPct}
			var err error
			if opts.Labels, err = repocli.ParseLabels(labels); err != nil {
				return err
			}
			bs, err := repocli.ParseBlockSize(blockSize)
			if err != nil {
				return err
			}
			opts.BlockSize = bs
			if verifyPct < 0 || verifyPct > 100 {
				return cli.Usagef("--verify-hints %v: want a percentage 0..100", verifyPct)
			}
			if hintsFile != "" {
				if base == "" {
					return cli.Usagef("--hints needs --base")
				}
				if opts.Hints, err = a.readHintsCtx(cmd.Context(), hintsFile); err != nil {
					return err
				}
			}
			src, err := blockdiff.OpenFileSource(as[0])
			if err != nil {
				return err
			}
			defer src.Close()
			return a.WithRepo(cmd.Context(), func(r *blockdiff.Repository) error {
				bar := a.NewProgress("backup " + opts.Volume)
				opts.Progress = bar.Bytes
				v, err := r.Backup(cmd.Context(), src, opts)
				bar.Finish()
				if v != nil {
					a.RecordVersion(v)
				}
				if err != nil {
					return err
				}
				if a.JSON {
					return a.WriteJSON(repocli.NewVersionJSON(v))
				}
				_, err = fmt.Fprintln(a.IO.Out, v.ID)
				return err
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&base, "base", "", "base version for a differential backup")
	f.StringVar(&hintsFile, "hints", "", "changed extents since --base, as `rbd diff --format=json` prints them (- for stdin)")
	f.StringArrayVar(&labels, "label", nil, "label k=v (repeatable)")
	f.StringVar(&blockSize, "block-size", "0", "block size of this version (default: the repository's)")
	f.Float64Var(&verifyPct, "verify-hints", 0, "percent of blocks outside the hints to check against the base (default: Benji's sample)")
	return cmd
}

// readHints reads rbd diff JSON from a file or stdin.
func (a *app) readHints(name string) ([]blockdiff.Extent, error) {
	var r io.Reader = a.IO.In
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, fmt.Errorf("hints: %w", err)
		}
		defer f.Close()
		r = f
	}
	return blockdiff.ParseRBDDiff(r)
}

func (a *app) restoreCmd() *cobra.Command {
	var sparse, force bool
	cmd := &cobra.Command{
		Use:   "restore [--sparse] [--force] VERSION DEST",
		Short: "Restore a version to a file or device, verifying every block",
		Args:  cli.Args(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, as []string) error {
			return a.WithRepo(cmd.Context(), func(r *blockdiff.Repository) error {
				bar := a.NewProgress("restore " + as[0])
				err := r.RestoreFile(cmd.Context(), as[0], as[1],
					blockdiff.RestoreFileOptions{Overwrite: force, AllowInvalid: force, Sparse: sparse, Progress: bar.Bytes})
				bar.Finish()
				if err == nil {
					a.Log.Info("restored", "version", as[0], "dest", as[1])
				}
				if errors.Is(err, blockdiff.ErrNotValid) {
					return fmt.Errorf("%w (a scrub or a failed backup marked it; see ls --json; --force restores it anyway, still verifying every block)", err)
				}
				return err
			})
		},
	}
	cmd.Flags().BoolVar(&sparse, "sparse", false, "skip writing zero blocks to an existing destination (a file is emptied first; a device must read as zeros)")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite an existing file or device, and restore a version that is not valid")
	return cmd
}

func (a *app) rmCmd() *cobra.Command {
	var force bool
	var minAge time.Duration
	cmd := &cobra.Command{
		Use:   "rm [--force] VERSION...",
		Short: "Remove versions (protected versions never; young ones only with --force)",
		Args:  cli.Args(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, as []string) error {
			if minAge < 0 {
				return cli.Usagef("--min-age %s: want a duration >= 0", minAge)
			}
			return a.WithRepo(cmd.Context(), func(r *blockdiff.Repository) error {
				return a.eachVersion(as, func(id string) error {
					return r.Remove(cmd.Context(), id, blockdiff.RemoveOptions{MinAge: minAge, Force: force})
				})
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "remove versions younger than --min-age")
	cmd.Flags().DurationVar(&minAge, "min-age", 6*24*time.Hour, "refuse to remove valid versions younger than this (Benji's disallow_remove_when_younger)")
	return cmd
}

// eachVersion applies fn to every ID, going on after failures, and returns
// an error naming how many failed.
func (a *app) eachVersion(ids []string, fn func(id string) error) error {
	var failed int
	var last error
	for _, id := range ids {
		if err := fn(id); err != nil {
			failed++
			last = err
			if len(ids) > 1 {
				a.Log.Error("failed", "version", id, "err", err)
			}
		}
	}
	if failed == 1 && len(ids) == 1 {
		return last
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d versions failed: last error: %w", failed, len(ids), last)
	}
	return nil
}

func (a *app) protectCmd(protect bool) *cobra.Command {
	name, short := "protect", "Protect versions from removal"
	if !protect {
		name, short = "unprotect", "Allow versions to be removed again"
	}
	return &cobra.Command{
		Use:   name + " VERSION...",
		Short: short,
		Args:  cli.Args(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, as []string) error {
			return a.WithRepo(cmd.Context(), func(r *blockdiff.Repository) error {
				return a.eachVersion(as, func(id string) error {
					_, err := r.SetProtected(cmd.Context(), id, protect)
					return err
				})
			})
		},
	}
}

func (a *app) labelCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "label VERSION k=v... | k-",
		Short: "Set (k=v) or delete (k-) labels of a version",
		Args:  cli.Args(cobra.MinimumNArgs(2)),
		RunE: func(cmd *cobra.Command, as []string) error {
			set := map[string]string{}
			var del []string
			for _, kv := range as[1:] {
				if k, ok := strings.CutSuffix(kv, "-"); ok && !strings.Contains(kv, "=") {
					del = append(del, k)
					continue
				}
				m, err := repocli.ParseLabels([]string{kv})
				if err != nil {
					return err
				}
				for k, v := range m {
					set[k] = v
				}
			}
			return a.WithRepo(cmd.Context(), func(r *blockdiff.Repository) error {
				_, err := r.SetLabels(cmd.Context(), as[0], set, del)
				return err
			})
		},
	}
}
