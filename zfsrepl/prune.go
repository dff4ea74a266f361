package zfsrepl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/retention"
	"github.com/cairn-backup/cairn/zfsrepl/zfs"
)

// KeepRules are one side's keep rules (zrepl's keep_sender, keep_receiver or
// a snap job's keep): a snapshot is destroyed only when no rule keeps it.
type KeepRules struct {
	// Policies are the rules that depend only on the snapshots (last_n,
	// grid, regex), built with the retention package.
	Policies []retention.Policy
	// NotReplicated is zrepl's not_replicated: it keeps every snapshot newer
	// (by createtxg) than the job's replication cursor, and every snapshot
	// when the filesystem has no cursor yet.
	NotReplicated bool
}

// Policy returns the retention policy for the snapshots of one filesystem
// whose replication cursor is cursor (nil when there is none). byName maps
// snapshot names to their versions (not_replicated compares createtxg).
func (k KeepRules) Policy(cursor *zfs.Version, byName map[string]zfs.Version) retention.Policy {
	ps := slices.Clone(k.Policies)
	if k.NotReplicated {
		ps = append(ps, retention.Func("not_replicated", func(it retention.Item) bool {
			if cursor == nil {
				return true
			}
			v, ok := byName[it.Name]
			return !ok || v.CreateTXG > cursor.CreateTXG
		}))
	}
	return retention.Union(ps...)
}

// PruneTarget is a side whose snapshots a pruner destroys: a Receiver (the
// sink's DestroySnapshots is confined to the client's root) or a sender.
type PruneTarget interface {
	ListVersions(ctx context.Context, fs string) ([]zfs.Version, error)
	// DestroySnapshots destroys snapshots of fs whose name and GUID match.
	DestroySnapshots(ctx context.Context, fs string, snaps []zfs.Version) error
}

// HoldLister is implemented by prune targets that can list a snapshot's
// holds; the pruner never destroys a held snapshot.
type HoldLister interface {
	SnapshotHolds(ctx context.Context, fs, snapshot string) ([]string, error)
}

// SenderPruner is a Sender whose snapshots can be pruned.
type SenderPruner interface {
	Sender
	DestroySnapshots(ctx context.Context, fs string, snaps []zfs.Version) error
}

// PruneOptions configures a pruning run.
type PruneOptions struct {
	// Job names the replication cursor (push jobs).
	Job string
	// Now is passed to the retention policies; zero means time.Now().
	Now time.Time
	// DryRun decides without destroying anything.
	DryRun bool
	// Logger gets one line per filesystem; nil discards.
	Logger *slog.Logger
}

func (o *PruneOptions) defaults() {
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Prune sides.
const (
	SideSender   = "sender"
	SideReceiver = "receiver"
	SideLocal    = "local" // a snap job
)

// PruneReport is the outcome of pruning one filesystem on one side.
type PruneReport struct {
	Side       string `json:"side"`
	Filesystem string `json:"filesystem"`
	// Kept are the snapshots the policy keeps.
	Kept []string `json:"kept"`
	// Destroyed are the snapshots destroyed (or, in a dry run, to destroy).
	Destroyed []string `json:"destroyed"`
	// Protected are the snapshots the policy would destroy but that were
	// kept anyway, with why: "@snap: replication cursor".
	Protected []string `json:"protected,omitempty"`
	Error     string   `json:"error,omitempty"`
	err       error
}

// Err returns the error of the filesystem's pruning.
func (p PruneReport) Err() error { return p.err }

// PruneErr joins the errors of reports.
func PruneErr(reports []PruneReport) error {
	var errs []error
	for _, r := range reports {
		errs = append(errs, r.err)
	}
	return errors.Join(errs...)
}

// protectFunc says why a snapshot must not be destroyed, "" when it may be.
type protectFunc func(ctx context.Context, v zfs.Version) (string, error)

func pruneFS(ctx context.Context, t PruneTarget, side, fs string, vs []zfs.Version, rules KeepRules, cursor *zfs.Version, protect protectFunc, o PruneOptions) PruneReport {
	rep := PruneReport{Side: side, Filesystem: fs, Kept: []string{}, Destroyed: []string{}}
	fail := func(err error) PruneReport {
		rep.err = fmt.Errorf("pruning %s %s: %w", side, fs, err)
		rep.Error = rep.err.Error()
		o.Logger.Error("pruning failed", "side", side, "fs", fs, "err", err)
		return rep
	}
	byName := map[string]zfs.Version{}
	var items []retention.Item
	for _, v := range vs {
		if v.Type != zfs.Snapshot {
			continue
		}
		byName[v.Name] = v
		items = append(items, retention.Item{Name: v.Name, Created: v.Creation})
	}
	keep, destroy := rules.Policy(cursor, byName).Apply(o.Now, items)
	for _, it := range keep {
		rep.Kept = append(rep.Kept, "@"+it.Name)
	}
	var doomed []zfs.Version
	for _, it := range destroy {
		v := byName[it.Name]
		why, err := protect(ctx, v)
		if err != nil {
			return fail(err)
		}
		if why != "" {
			rep.Protected = append(rep.Protected, "@"+v.Name+": "+why)
			continue
		}
		doomed = append(doomed, v)
	}
	for _, v := range doomed {
		rep.Destroyed = append(rep.Destroyed, "@"+v.Name)
	}
	if len(doomed) > 0 && !o.DryRun {
		if err := t.DestroySnapshots(ctx, fs, doomed); err != nil {
			return fail(err)
		}
	}
	o.Logger.Info("pruned", "side", side, "fs", fs, "kept", len(rep.Kept), "destroyed", len(rep.Destroyed), "protected", len(rep.Protected), "dry_run", o.DryRun)
	return rep
}

// findCursor returns the job's replication cursor bookmark among vs.
func findCursor(vs []zfs.Version, job string) *zfs.Version {
	for _, v := range vs {
		if v.Type == zfs.Bookmark && IsCursor(v.Name, job) {
			return &v
		}
	}
	return nil
}

// holdProtect protects held snapshots when t can list holds.
func holdProtect(t any, fs string) protectFunc {
	hl, ok := t.(HoldLister)
	return func(ctx context.Context, v zfs.Version) (string, error) {
		if !ok {
			return "", nil
		}
		tags, err := hl.SnapshotHolds(ctx, fs, v.Name)
		if err != nil {
			return "", fmt.Errorf("holds of %s@%s: %w", fs, v.Name, err)
		}
		if len(tags) > 0 {
			return "held (" + strings.Join(tags, ", ") + ")", nil
		}
		return "", nil
	}
}

// PrunePush prunes both sides of a push job, as zrepl does after each
// replication: for each of the sender's filesystems, keepSender on the
// sender and keepReceiver on the receiver (through the sink, so only below
// the client's root).
//
// The sender never destroys the snapshot of the job's replication cursor, a
// snapshot a partial receive on the receiver resumes from or to, or a held
// snapshot; the cursor bookmark stays in any case, so replication continues
// incrementally even when the receiver was unreachable for longer than the
// sender keeps snapshots. The receiver never destroys its newest snapshot nor
// the one the sender's cursor names: they are the next incremental base.
// When the receiver cannot be reached, the sender is still pruned with the
// same protections, except for the receiver's resume token, which only
// matters while a receive is partial and is then held as a step's source.
func PrunePush(ctx context.Context, sender SenderPruner, receiver Receiver, keepSender, keepReceiver KeepRules, o PruneOptions) ([]PruneReport, error) {
	o.defaults()
	fss, err := sender.ListFilesystems(ctx)
	if err != nil {
		return nil, fmt.Errorf("pruning: listing the sender's filesystems: %w", err)
	}
	var reports []PruneReport
	for _, f := range fss {
		if ctx.Err() != nil {
			return reports, ctx.Err()
		}
		fs := f.Name
		sv, err := sender.ListVersions(ctx, fs)
		if err != nil {
			reports = append(reports, failed(SideSender, fs, fmt.Errorf("listing versions: %w", err)))
			continue
		}
		cursor := findCursor(sv, o.Job)
		// What a partial receive needs stays on the sender.
		resume := map[uint64]bool{}
		receiverOK := true
		if tok, err := receiver.ResumeToken(ctx, fs); err != nil {
			receiverOK = false
			o.Logger.Warn("pruning: receiver unreachable, pruning the sender only", "fs", fs, "err", err)
		} else if tok != "" {
			ri, err := sender.ParseResumeToken(ctx, tok)
			if err != nil {
				reports = append(reports, failed(SideSender, fs, fmt.Errorf("reading the receiver's resume token: %w", err)))
				continue
			}
			resume[ri.ToGUID], resume[ri.FromGUID] = true, true
		}
		held := holdProtect(sender, fs)
		protect := func(ctx context.Context, v zfs.Version) (string, error) {
			if cursor != nil && v.GUID == cursor.GUID {
				return "replication cursor", nil
			}
			if resume[v.GUID] {
				return "partial receive on the receiver", nil
			}
			return held(ctx, v)
		}
		reports = append(reports, pruneFS(ctx, sender, SideSender, fs, sv, keepSender, cursor, protect, o))
		if !receiverOK {
			reports = append(reports, failed(SideReceiver, fs, errors.New("receiver unreachable")))
			continue
		}
		rv, err := receiver.ListVersions(ctx, fs)
		if err != nil {
			reports = append(reports, failed(SideReceiver, fs, fmt.Errorf("listing versions: %w", err)))
			continue
		}
		if len(rv) == 0 {
			continue
		}
		var newest *zfs.Version
		for i, v := range rv {
			if v.Type == zfs.Snapshot && (newest == nil || v.CreateTXG > newest.CreateTXG) {
				newest = &rv[i]
			}
		}
		rprotect := func(_ context.Context, v zfs.Version) (string, error) {
			if newest != nil && v.GUID == newest.GUID {
				return "newest received snapshot", nil
			}
			if cursor != nil && v.GUID == cursor.GUID {
				return "incremental base (the sender's replication cursor)", nil
			}
			return "", nil
		}
		// not_replicated means nothing on the receiver: without a cursor it keeps all.
		reports = append(reports, pruneFS(ctx, receiver, SideReceiver, fs, rv, keepReceiver, nil, rprotect, o))
	}
	return reports, PruneErr(reports)
}

// PruneLocal prunes the filesystems of a snap job with keep. Held snapshots
// are never destroyed.
func PruneLocal(ctx context.Context, t interface {
	PruneTarget
	ListFilesystems(ctx context.Context) ([]zfs.Filesystem, error)
}, keep KeepRules, o PruneOptions) ([]PruneReport, error) {
	o.defaults()
	fss, err := t.ListFilesystems(ctx)
	if err != nil {
		return nil, fmt.Errorf("pruning: listing filesystems: %w", err)
	}
	var reports []PruneReport
	for _, f := range fss {
		if ctx.Err() != nil {
			return reports, ctx.Err()
		}
		vs, err := t.ListVersions(ctx, f.Name)
		if err != nil {
			reports = append(reports, failed(SideLocal, f.Name, fmt.Errorf("listing versions: %w", err)))
			continue
		}
		reports = append(reports, pruneFS(ctx, t, SideLocal, f.Name, vs, keep, nil, holdProtect(t, f.Name), o))
	}
	return reports, PruneErr(reports)
}

func failed(side, fs string, err error) PruneReport {
	err = fmt.Errorf("pruning %s %s: %w", side, fs, err)
	return PruneReport{Side: side, Filesystem: fs, Error: err.Error(), err: err}
}

// SnapshotHolds returns the hold tags of fs@snapshot.
func (s *LocalSender) SnapshotHolds(ctx context.Context, fs, snapshot string) ([]string, error) {
	return s.ZFS.Holds(ctx, fs+"@"+snapshot)
}

// DestroySnapshots destroys snapshots of the local fs whose name and GUID
// match; held snapshots fail as zfs destroy does.
func (s *LocalSender) DestroySnapshots(ctx context.Context, fs string, snaps []zfs.Version) error {
	if s.Filter == nil || !s.Filter.Match(fs) {
		return fmt.Errorf("refused: %s is not selected by the job's filesystems", fs)
	}
	cur, err := s.ZFS.ListVersions(ctx, fs)
	if err != nil {
		return err
	}
	return destroyMatching(ctx, s.ZFS, fs, cur, snaps)
}

func destroyMatching(ctx context.Context, r *zfs.Runner, fs string, cur, snaps []zfs.Version) error {
	var errs []error
	for _, sn := range snaps {
		if sn.Type != zfs.Snapshot {
			errs = append(errs, fmt.Errorf("refused: %s is not a snapshot", sn.RelName()))
			continue
		}
		i := slices.IndexFunc(cur, func(v zfs.Version) bool { return v.Type == zfs.Snapshot && v.Name == sn.Name })
		if i < 0 {
			continue // already gone
		}
		if cur[i].GUID != sn.GUID {
			errs = append(errs, fmt.Errorf("refused: %s@%s has guid %d, not %d", fs, sn.Name, cur[i].GUID, sn.GUID))
			continue
		}
		if err := r.DestroyVersion(ctx, cur[i]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
