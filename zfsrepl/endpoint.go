package zfsrepl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/cairn-backup/cairn/zfsrepl/zfs"
)

// Sender is the active side of a push job: it owns the source filesystems.
type Sender interface {
	// ListFilesystems returns the filesystems to replicate.
	ListFilesystems(ctx context.Context) ([]zfs.Filesystem, error)
	// ListVersions returns the snapshots and bookmarks of one filesystem.
	ListVersions(ctx context.Context, fs string) ([]zfs.Version, error)
	// ParseResumeToken says what a receiver's resume token would resume.
	ParseResumeToken(ctx context.Context, token string) (zfs.ResumeInfo, error)
	// HoldStep protects the step's snapshots from destruction while it runs.
	HoldStep(ctx context.Context, fs string, step Step) error
	// ReleaseStep undoes HoldStep.
	ReleaseStep(ctx context.Context, fs string, step Step) error
	// Send starts the step's stream. Read fails (not io.EOF) when the send
	// fails; Close reports the command's failure.
	Send(ctx context.Context, fs string, step Step) (io.ReadCloser, error)
	// MoveCursor records to as the last replicated snapshot of fs.
	MoveCursor(ctx context.Context, fs string, to zfs.Version) error
}

// ReceiveRequest describes a stream sent to a Receiver.
type ReceiveRequest struct {
	// Filesystem is the sender's filesystem name; the receiver maps it below
	// its root.
	Filesystem string `json:"filesystem"`
	Step       Step   `json:"step"`
}

// Receiver is the passive side: a sink that receives below its root. Every
// filesystem name it takes or returns is the sender's name, relative to the
// receiver's root.
type Receiver interface {
	// ListFilesystems returns the filesystems below the root (not the root).
	ListFilesystems(ctx context.Context) ([]zfs.Filesystem, error)
	// ListVersions returns the snapshots and bookmarks of fs, nil when fs does
	// not exist or is a placeholder.
	ListVersions(ctx context.Context, fs string) ([]zfs.Version, error)
	// ResumeToken returns the receive_resume_token of fs, "" when none.
	ResumeToken(ctx context.Context, fs string) (string, error)
	// Receive receives a stream. When the stream fails midway the partial
	// receive is kept so that it can be resumed.
	Receive(ctx context.Context, req ReceiveRequest, stream io.Reader) error
	// DestroySnapshots destroys snapshots of fs, each only if its GUID still
	// matches. Filesystems are never destroyed.
	DestroySnapshots(ctx context.Context, fs string, snaps []zfs.Version) error
}

// CursorName returns the replication cursor bookmark name of job for the
// snapshot with guid: zrepl_CURSOR_G_<guid as 16 hex digits>_J_<job>.
func CursorName(guid uint64, job string) string {
	return fmt.Sprintf("zrepl_CURSOR_G_%016x_J_%s", guid, job)
}

// IsCursor reports whether a bookmark name is a replication cursor of job.
func IsCursor(name, job string) bool {
	return strings.HasPrefix(name, "zrepl_CURSOR_G_") && strings.HasSuffix(name, "_J_"+job) &&
		len(name) == len("zrepl_CURSOR_G_")+16+len("_J_")+len(job)
}

// StepHoldTag is the hold tag on a step's snapshots while it runs.
func StepHoldTag(job string) string { return "zrepl_STEP_J_" + job }

// LastReceivedHoldTag is the hold tag the receiver puts on its newest
// received snapshot.
func LastReceivedHoldTag(job string) string { return "zrepl_last_received_J_" + job }

// ValidateJobName checks that a job name can be part of hold tags and
// bookmark names.
func ValidateJobName(job string) error {
	if job == "" {
		return errors.New("zfsrepl: empty job name")
	}
	if err := zfs.ValidateComponent(job); err != nil {
		return fmt.Errorf("zfsrepl: job name: %w", err)
	}
	if strings.ContainsRune(job, ' ') {
		return fmt.Errorf("zfsrepl: job name %q contains a space", job)
	}
	return zfs.ValidateHoldTag(LastReceivedHoldTag(job))
}

// LocalSender is a Sender over the local pools.
type LocalSender struct {
	ZFS *zfs.Runner
	// Job names the cursor bookmark and the step holds.
	Job string
	// Filter selects the filesystems to replicate; nil selects none.
	Filter *Filter
}

// ListFilesystems lists the local filesystems the filter selects, parents first.
func (s *LocalSender) ListFilesystems(ctx context.Context) ([]zfs.Filesystem, error) {
	if s.Filter == nil {
		return nil, nil
	}
	var res []zfs.Filesystem
	for _, root := range s.Filter.Roots() {
		all, err := s.ZFS.ListFilesystems(ctx, root)
		if err != nil {
			return nil, fmt.Errorf("listing filesystems below %s: %w", root, err)
		}
		for _, f := range all {
			if s.Filter.Match(f.Name) && !slices.ContainsFunc(res, func(g zfs.Filesystem) bool { return g.Name == f.Name }) {
				res = append(res, f)
			}
		}
	}
	slices.SortFunc(res, func(a, b zfs.Filesystem) int { return strings.Compare(a.Name, b.Name) })
	return res, nil
}

// ListVersions lists the snapshots and bookmarks of fs.
func (s *LocalSender) ListVersions(ctx context.Context, fs string) ([]zfs.Version, error) {
	return s.ZFS.ListVersions(ctx, fs)
}

// ParseResumeToken runs `zfs send -nv -t`.
func (s *LocalSender) ParseResumeToken(ctx context.Context, token string) (zfs.ResumeInfo, error) {
	return s.ZFS.ParseResumeToken(ctx, token)
}

func stepSnapshots(fs string, step Step) []string {
	var res []string
	if step.From != nil && step.From.Type == zfs.Snapshot {
		res = append(res, fs+"@"+step.From.Name)
	}
	return append(res, fs+"@"+step.To.Name)
}

// HoldStep holds the step's from (if a snapshot) and to snapshots.
func (s *LocalSender) HoldStep(ctx context.Context, fs string, step Step) error {
	for _, sn := range stepSnapshots(fs, step) {
		if err := s.ZFS.Hold(ctx, StepHoldTag(s.Job), sn); err != nil {
			return fmt.Errorf("step hold: %w", err)
		}
	}
	return nil
}

// ReleaseStep releases the step holds.
func (s *LocalSender) ReleaseStep(ctx context.Context, fs string, step Step) error {
	var errs []error
	for _, sn := range stepSnapshots(fs, step) {
		if err := s.ZFS.Release(ctx, StepHoldTag(s.Job), sn); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Send runs zfs send for the step.
func (s *LocalSender) Send(ctx context.Context, fs string, step Step) (io.ReadCloser, error) {
	a := zfs.SendArgs{Raw: step.Raw}
	switch step.Kind {
	case StepResume:
		a.ResumeToken = step.ResumeToken
		a.Raw = false
	case StepIncremental:
		if step.From == nil {
			return nil, errors.New("zfsrepl: incremental step without from")
		}
		a.From = fs + step.From.RelName()
		a.To = fs + "@" + step.To.Name
	case StepFull:
		a.To = fs + "@" + step.To.Name
	default:
		return nil, fmt.Errorf("zfsrepl: unknown step kind %q", step.Kind)
	}
	return s.ZFS.Send(ctx, a)
}

// MoveCursor bookmarks fs@to as the job's replication cursor and destroys the
// job's older cursors.
func (s *LocalSender) MoveCursor(ctx context.Context, fs string, to zfs.Version) error {
	name := CursorName(to.GUID, s.Job)
	versions, err := s.ZFS.ListVersions(ctx, fs)
	if err != nil {
		return fmt.Errorf("moving the replication cursor: %w", err)
	}
	exists := slices.ContainsFunc(versions, func(v zfs.Version) bool { return v.Type == zfs.Bookmark && v.Name == name })
	if !exists {
		src := zfs.Version{Type: zfs.Snapshot, Filesystem: fs, Name: to.Name}
		if err := s.ZFS.Bookmark(ctx, src, name); err != nil {
			return fmt.Errorf("moving the replication cursor: %w", err)
		}
	}
	for _, v := range versions {
		if v.Type == zfs.Bookmark && v.Name != name && IsCursor(v.Name, s.Job) {
			if err := s.ZFS.DestroyVersion(ctx, v); err != nil {
				return fmt.Errorf("destroying the old replication cursor: %w", err)
			}
		}
	}
	return nil
}

// LocalReceiver receives into the local pools below Root, which is
// root_fs/<client identity> for a sink. Every name it gets is validated and
// cannot leave Root.
type LocalReceiver struct {
	ZFS *zfs.Runner
	// Root is the dataset everything is received below.
	Root string
	// Job names the last-received hold.
	Job string
}

// target maps a sender's filesystem name below Root.
func (r *LocalReceiver) target(fs string) (string, error) {
	if err := zfs.ValidateRelativePath(fs); err != nil {
		return "", fmt.Errorf("refused: %w", err)
	}
	if err := zfs.ValidateFilesystem(r.Root); err != nil {
		return "", fmt.Errorf("receiver root: %w", err)
	}
	t := r.Root + "/" + fs
	if err := zfs.ValidateFilesystem(t); err != nil {
		return "", fmt.Errorf("refused: %w", err)
	}
	return t, nil
}

// ListFilesystems lists the filesystems below Root, with names relative to it.
func (r *LocalReceiver) ListFilesystems(ctx context.Context) ([]zfs.Filesystem, error) {
	all, err := r.ZFS.ListFilesystems(ctx, r.Root)
	if err != nil {
		return nil, err
	}
	var res []zfs.Filesystem
	for _, f := range all {
		rel, ok := strings.CutPrefix(f.Name, r.Root+"/")
		if !ok {
			continue
		}
		f.Name = rel
		res = append(res, f)
	}
	return res, nil
}

// ListVersions lists the versions of Root/fs; nil when it does not exist or is
// a placeholder.
func (r *LocalReceiver) ListVersions(ctx context.Context, fs string) ([]zfs.Version, error) {
	t, err := r.target(fs)
	if err != nil {
		return nil, err
	}
	f, ok, err := r.ZFS.GetFilesystem(ctx, t)
	if err != nil || !ok || f.Placeholder {
		return nil, err
	}
	vs, err := r.ZFS.ListVersions(ctx, t)
	if err != nil {
		return nil, err
	}
	for i := range vs {
		vs[i].Filesystem = fs
	}
	return vs, nil
}

// ResumeToken returns the receive_resume_token of Root/fs.
func (r *LocalReceiver) ResumeToken(ctx context.Context, fs string) (string, error) {
	t, err := r.target(fs)
	if err != nil {
		return "", err
	}
	return r.ZFS.ReceiveResumeToken(ctx, t)
}

// ensureParents creates the missing datasets between Root's pool and the
// parent of t as placeholders (zrepl:placeholder=on, not mounted).
func (r *LocalReceiver) ensureParents(ctx context.Context, t string) error {
	comps := strings.Split(t, "/")
	for i := 2; i < len(comps); i++ {
		p := strings.Join(comps[:i], "/")
		_, ok, err := r.ZFS.GetFilesystem(ctx, p)
		if err != nil {
			return err
		}
		if ok {
			continue
		}
		if len(p) < len(r.Root) {
			return fmt.Errorf("receiver root %s does not exist (missing %s)", r.Root, p)
		}
		props := map[string]string{zfs.PlaceholderProperty: "on", "mountpoint": "none"}
		if err := r.ZFS.CreateFilesystem(ctx, p, props, false); err != nil {
			return fmt.Errorf("creating placeholder %s: %w", p, err)
		}
	}
	return nil
}

// Receive receives a stream into Root/<req.Filesystem>, creating placeholder
// parents, replacing a placeholder on a full receive, and moving the
// last-received hold to the received snapshot.
func (r *LocalReceiver) Receive(ctx context.Context, req ReceiveRequest, stream io.Reader) error {
	t, err := r.target(req.Filesystem)
	if err != nil {
		return err
	}
	if err := zfs.ValidateComponent(req.Step.To.Name); err != nil {
		return fmt.Errorf("refused: snapshot name: %w", err)
	}
	if err := r.ensureParents(ctx, t); err != nil {
		return err
	}
	cur, exists, err := r.ZFS.GetFilesystem(ctx, t)
	if err != nil {
		return err
	}
	var before []zfs.Version
	args := zfs.ReceiveArgs{}
	if exists && !cur.Placeholder {
		if before, err = r.ZFS.ListVersions(ctx, t); err != nil {
			return err
		}
	}
	if exists && cur.Placeholder && req.Step.Kind == StepFull {
		args.Force = true
	}
	if err := r.ZFS.Receive(ctx, t, args, stream); err != nil {
		return err
	}
	// A received filesystem is not a placeholder, even though it inherits
	// zrepl:placeholder=on from a placeholder parent: say so locally.
	if !exists || cur.Placeholder {
		if err := r.ZFS.SetProperty(ctx, t, zfs.PlaceholderProperty, "off"); err != nil {
			return err
		}
	}
	after, err := r.ZFS.ListVersions(ctx, t)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(after, func(v zfs.Version) bool { return v.Type == zfs.Snapshot && v.GUID == req.Step.To.GUID })
	if i < 0 {
		return fmt.Errorf("received %s, but no snapshot with guid %d is there", t, req.Step.To.GUID)
	}
	if r.Job == "" {
		return nil
	}
	tag := LastReceivedHoldTag(r.Job)
	if err := r.ZFS.Hold(ctx, tag, after[i].FullName()); err != nil {
		return fmt.Errorf("last-received hold: %w", err)
	}
	for _, v := range before {
		if v.Type == zfs.Snapshot && v.GUID != after[i].GUID {
			if err := r.ZFS.Release(ctx, tag, v.FullName()); err != nil {
				var ce *zfs.CommandError
				if !errors.As(err, &ce) || !ce.NotExist() {
					return fmt.Errorf("releasing the last-received hold: %w", err)
				}
			}
		}
	}
	return nil
}

// DestroySnapshots destroys snapshots of Root/fs whose name and GUID match.
func (r *LocalReceiver) DestroySnapshots(ctx context.Context, fs string, snaps []zfs.Version) error {
	t, err := r.target(fs)
	if err != nil {
		return err
	}
	cur, err := r.ZFS.ListVersions(ctx, t)
	if err != nil {
		return err
	}
	var errs []error
	for _, s := range snaps {
		if s.Type != zfs.Snapshot {
			errs = append(errs, fmt.Errorf("refused: %s is not a snapshot", s.RelName()))
			continue
		}
		if err := zfs.ValidateComponent(s.Name); err != nil {
			errs = append(errs, fmt.Errorf("refused: %w", err))
			continue
		}
		i := slices.IndexFunc(cur, func(v zfs.Version) bool { return v.Type == zfs.Snapshot && v.Name == s.Name })
		if i < 0 {
			continue // already gone
		}
		if cur[i].GUID != s.GUID {
			errs = append(errs, fmt.Errorf("refused: %s@%s has guid %d, not %d", fs, s.Name, cur[i].GUID, s.GUID))
			continue
		}
		if err := r.ZFS.DestroyVersion(ctx, cur[i]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
