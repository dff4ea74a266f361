package zfsrepl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/zfsrepl/zfs"
)

// DenseTimestamp is zrepl's default snapshot timestamp layout ("dense"),
// always in UTC.
const DenseTimestamp = "20060102_150405_000"

// UnixSecondsTimestamp is the layout name of zrepl's "unix-seconds" format.
const UnixSecondsTimestamp = "unix-seconds"

// SnapshotName returns prefix followed by t in UTC formatted with layout
// (a Go time layout, or UnixSecondsTimestamp), as zrepl names the snapshots
// it takes: "zrepl_20260102_150405_000".
func SnapshotName(prefix, layout string, t time.Time) string {
	if layout == "" {
		layout = DenseTimestamp
	}
	if layout == UnixSecondsTimestamp {
		return prefix + strconv.FormatInt(t.Unix(), 10)
	}
	return prefix + t.UTC().Format(layout)
}

// SnapshotTarget is where a snapshotter takes snapshots: the filesystems a
// push or snap job selects.
type SnapshotTarget interface {
	ListFilesystems(ctx context.Context) ([]zfs.Filesystem, error)
	ListVersions(ctx context.Context, fs string) ([]zfs.Version, error)
	// Snapshot takes fs@name.
	Snapshot(ctx context.Context, fs, name string) error
}

// Hook is a command run before and after each filesystem's snapshot, as
// zrepl's `command` hooks: with ZREPL_HOOKTYPE (pre_snapshot,
// post_snapshot), ZREPL_FS, ZREPL_SNAPNAME and ZREPL_DRYRUN in its
// environment, killed after Timeout.
type Hook struct {
	Path    string
	Timeout time.Duration
	// ErrIsFatal: a failing pre-snapshot run skips the snapshot and the
	// later hooks of that filesystem.
	ErrIsFatal bool
	// Filesystems limits the hook to some filesystems; nil runs it for all.
	Filesystems *Filter
}

// SnapshotConfig configures a periodic snapshotter.
type SnapshotConfig struct {
	Prefix   string
	Interval time.Duration
	// TimestampFormat is the layout of SnapshotName ("" is DenseTimestamp).
	TimestampFormat string
	Hooks           []Hook
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// Logger gets a line per filesystem and hook output; nil discards.
	Logger *slog.Logger
	// Start, when set, is called by RunPeriodic as each round starts,
	// before its first hook.
	Start func()
	// Schedule, when set, replaces Interval (zrepl's cron snapshotting):
	// RunPeriodic takes its first round at Schedule(now), and each next at
	// Schedule of the later of the last round's time and now, so that
	// times missed while a round ran long are skipped. It returns the first
	// time strictly after its argument.
	Schedule func(after time.Time) time.Time
	// After is RunPeriodic's timer, a clock's time.After: it waits until
	// Now has advanced by d. Nil is a timer of the real clock.
	After func(d time.Duration) <-chan time.Time
}

func (c *SnapshotConfig) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *SnapshotConfig) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

// SnapshotReport is the outcome of one round of snapshots.
type SnapshotReport struct {
	Time   time.Time `json:"time"`
	Name   string    `json:"name"`
	Taken  []string  `json:"taken"`            // filesystems snapshotted
	Failed []string  `json:"failed,omitempty"` // "fs: error"
	err    error
}

// Err joins the round's errors.
func (r *SnapshotReport) Err() error { return r.err }

// SnapshotAll takes one snapshot, named after the current time, of every
// filesystem of t, running the hooks around each. A failure on one
// filesystem does not stop the others.
func SnapshotAll(ctx context.Context, t SnapshotTarget, cfg SnapshotConfig) *SnapshotReport {
	now := cfg.now()
	rep := &SnapshotReport{Time: now, Name: SnapshotName(cfg.Prefix, cfg.TimestampFormat, now)}
	log := cfg.logger()
	fss, err := t.ListFilesystems(ctx)
	if err != nil {
		rep.err = fmt.Errorf("snapshotting: listing filesystems: %w", err)
		return rep
	}
	var errs []error
	for _, f := range fss {
		if err := snapshotOne(ctx, t, cfg, log, f.Name, rep.Name); err != nil {
			err = fmt.Errorf("snapshotting %s: %w", f.Name, err)
			errs = append(errs, err)
			rep.Failed = append(rep.Failed, f.Name+": "+err.Error())
			log.Error("snapshot failed", "fs", f.Name, "err", err)
			continue
		}
		rep.Taken = append(rep.Taken, f.Name)
		log.Info("snapshot taken", "fs", f.Name, "snapshot", rep.Name)
	}
	rep.err = errors.Join(errs...)
	return rep
}

func snapshotOne(ctx context.Context, t SnapshotTarget, cfg SnapshotConfig, log *slog.Logger, fs, name string) error {
	var ran []Hook // hooks whose pre edge succeeded, for the post edges
	var errs []error
	fatal := false
	for _, h := range cfg.Hooks {
		if h.Filesystems != nil && !h.Filesystems.Match(fs) {
			continue
		}
		if err := runHook(ctx, log, h, "pre_snapshot", fs, name); err != nil {
			if h.ErrIsFatal {
				errs = append(errs, err)
				fatal = true
				break
			}
			log.Warn("pre-snapshot hook failed", "fs", fs, "hook", h.Path, "err", err)
			continue
		}
		ran = append(ran, h)
	}
	if !fatal {
		if err := t.Snapshot(ctx, fs, name); err != nil {
			errs = append(errs, err)
		}
	}
	for i := len(ran) - 1; i >= 0; i-- {
		if err := runHook(ctx, log, ran[i], "post_snapshot", fs, name); err != nil {
			log.Warn("post-snapshot hook failed", "fs", fs, "hook", ran[i].Path, "err", err)
		}
	}
	return errors.Join(errs...)
}

func runHook(ctx context.Context, log *slog.Logger, h Hook, typ, fs, name string) error {
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.Path)
	cmd.Env = append(os.Environ(), "ZREPL_HOOKTYPE="+typ, "ZREPL_FS="+fs, "ZREPL_SNAPNAME="+name, "ZREPL_DRYRUN=false")
	cmd.WaitDelay = time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if s := strings.TrimSpace(stdout.String()); s != "" {
		log.Info("hook output", "hook", h.Path, "type", typ, "fs", fs, "stdout", s)
	}
	if s := strings.TrimSpace(stderr.String()); s != "" {
		log.Warn("hook output", "hook", h.Path, "type", typ, "fs", fs, "stderr", s)
	}
	if ctx.Err() == context.DeadlineExceeded {
		return fmt.Errorf("hook %s (%s): timed out after %v", h.Path, typ, timeout)
	}
	if err != nil {
		return fmt.Errorf("hook %s (%s): %w", h.Path, typ, err)
	}
	return nil
}

// NextSnapshotTime returns when a periodic snapshotter started at now takes
// its first snapshots, as zrepl syncs up: for each filesystem, its newest
// snapshot with the prefix plus the interval (now when that has passed);
// the earliest of these; now when no filesystem has such a snapshot.
func NextSnapshotTime(ctx context.Context, t SnapshotTarget, prefix string, interval time.Duration, now time.Time) (time.Time, error) {
	fss, err := t.ListFilesystems(ctx)
	if err != nil {
		return now, fmt.Errorf("snapshotting: listing filesystems: %w", err)
	}
	var best time.Time
	for _, f := range fss {
		vs, err := t.ListVersions(ctx, f.Name)
		if err != nil {
			return now, fmt.Errorf("snapshotting: listing %s: %w", f.Name, err)
		}
		var latest *zfs.Version
		for i, v := range vs {
			if v.Type == zfs.Snapshot && strings.HasPrefix(v.Name, prefix) && (latest == nil || v.CreateTXG > latest.CreateTXG) {
				latest = &vs[i]
			}
		}
		if latest == nil {
			continue
		}
		next := latest.Creation.Add(interval)
		if next.Before(now) {
			next = now
		}
		if best.IsZero() || next.Before(best) {
			best = next
		}
	}
	if best.IsZero() {
		return now, nil
	}
	return best, nil
}

// RunPeriodic takes snapshots every cfg.Interval until ctx is done, the
// first at NextSnapshotTime (or at the times of cfg.Schedule). After each round it calls done (a push job
// replicates then). It returns ctx's error.
func RunPeriodic(ctx context.Context, t SnapshotTarget, cfg SnapshotConfig, done func(*SnapshotReport)) error {
	if cfg.Interval <= 0 && cfg.Schedule == nil {
		return errors.New("snapshotting: interval must be positive")
	}
	log := cfg.logger()
	var next time.Time
	if cfg.Schedule != nil {
		next = cfg.Schedule(cfg.now())
	} else {
		var err error
		next, err = NextSnapshotTime(ctx, t, cfg.Prefix, cfg.Interval, cfg.now())
		if err != nil {
			log.Error("finding the snapshot sync point; snapshotting now", "err", err)
		}
	}
	for {
		wait := time.Until(next)
		if cfg.Now != nil {
			wait = next.Sub(cfg.now())
		}
		if wait > 0 {
			log.Debug("waiting for the next snapshot", "at", next)
			after, stop := cfg.After, func() {}
			if after == nil {
				tm := time.NewTimer(wait)
				after, stop = func(time.Duration) <-chan time.Time { return tm.C }, func() { tm.Stop() }
			}
			select {
			case <-ctx.Done():
				stop()
				return ctx.Err()
			case <-after(wait):
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if cfg.Start != nil {
			cfg.Start()
		}
		rep := SnapshotAll(ctx, t, cfg)
		if done != nil {
			done(rep)
		}
		if cfg.Schedule != nil {
			next = cfg.Schedule(latest(next, cfg.now()))
			continue
		}
		next = next.Add(cfg.Interval)
		if now := cfg.now(); !next.After(now) {
			// The round took longer than the interval, or the clock
			// jumped: the round just taken stands for the missed ones;
			// the next is the first on the schedule after now.
			next = next.Add((now.Sub(next)/cfg.Interval + 1) * cfg.Interval)
		}
	}
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// Snapshot takes fs@name; fs must be selected by the job's filter.
func (s *LocalSender) Snapshot(ctx context.Context, fs, name string) error {
	if s.Filter == nil || !s.Filter.Match(fs) {
		return fmt.Errorf("refused: %s is not selected by the job's filesystems", fs)
	}
	return s.ZFS.Snapshot(ctx, fs, name)
}
