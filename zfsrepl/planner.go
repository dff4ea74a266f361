// Package zfsrepl replicates ZFS filesystems the way zrepl does: a push job
// (the active sender) plans, per filesystem, the sends that bring a sink (the
// passive receiver) up to date, and runs them step by step over a transport.
//
// The parts are kept apart:
//
//   - Plan is a pure function from the sender's and receiver's versions (and a
//     receiver's resume token) to the steps to run; it does no I/O.
//   - Sender and Receiver are the two endpoints. LocalSender and LocalReceiver
//     run zfs commands through package zfsrepl/zfs; package
//     zfsrepl/transport carries a Receiver over HTTPS with mutual TLS, plain
//     TCP or an in-process pipe.
//   - Replicate runs one replication round: plan, then for each step hold,
//     send, receive, move the replication cursor, release.
//
// Guarantees, as in zrepl: after each step the sender's replication cursor
// bookmark (#zrepl_CURSOR_G_<guid>_J_<job>) marks the last replicated
// snapshot, so the incremental base survives sender pruning; step holds keep
// the step's snapshots in place while it runs; the receiver holds its newest
// received snapshot (zrepl_last_received_J_<job>). Nothing is ever destroyed
// to resolve a conflict: a diverged receiver is reported.
package zfsrepl

import (
	"errors"
	"fmt"
	"slices"

	"github.com/cairn-backup/cairn/zfsrepl/zfs"
)

// StepKind is the kind of a replication step.
type StepKind string

// Step kinds.
const (
	StepResume      StepKind = "resume"      // zfs send -t TOKEN
	StepFull        StepKind = "full"        // zfs send TO
	StepIncremental StepKind = "incremental" // zfs send -i FROM TO
)

// Step is one send/receive. From and To are sender versions; for a resume
// step, To carries what the token says (name and GUID) and From is nil.
type Step struct {
	Kind        StepKind     `json:"kind"`
	From        *zfs.Version `json:"from,omitempty"`
	To          zfs.Version  `json:"to"`
	ResumeToken string       `json:"resume_token,omitempty"`
	Raw         bool         `json:"raw,omitempty"`
}

// String describes the step as `zfs send` would be called.
func (s Step) String() string {
	switch s.Kind {
	case StepResume:
		return fmt.Sprintf("resume %s", s.To.FullName())
	case StepIncremental:
		return fmt.Sprintf("incremental %s -> %s", s.From.FullName(), s.To.RelName())
	default:
		return fmt.Sprintf("full %s", s.To.FullName())
	}
}

// InitialReplication says what to send when nothing is in common.
type InitialReplication string

// Initial replication policies (zrepl's conflict_resolution.initial_replication).
const (
	InitialMostRecent InitialReplication = "most_recent" // a full send of the newest snapshot
	InitialAll        InitialReplication = "all"         // a full send of the oldest, then incrementals
	InitialFail       InitialReplication = "fail"        // report a conflict
)

// PlanConfig configures Plan.
type PlanConfig struct {
	// Initial is the policy when the receiver has nothing; "" means most_recent.
	Initial InitialReplication
	// Raw sends with -w (encrypted datasets arrive encrypted).
	Raw bool
}

// PlanInput is what Plan knows about one filesystem.
type PlanInput struct {
	Filesystem string        // the sender's filesystem name
	Sender     []zfs.Version // the sender's snapshots and bookmarks, any order
	Receiver   []zfs.Version // the receiver's snapshots (bookmarks are ignored); nil when it has none
	// Resume describes the receiver's receive_resume_token; nil when there is none.
	Resume *zfs.ResumeInfo
}

// ConflictKind classifies a ConflictError.
type ConflictKind string

// Conflict kinds.
const (
	ConflictNoSenderSnapshots ConflictKind = "no_sender_snapshots" // nothing to send
	ConflictDiverged          ConflictKind = "diverged"            // receiver's newest snapshot is not on the sender
	ConflictNoCommon          ConflictKind = "no_common_version"   // receiver has snapshots, none in common
	ConflictResumeUnusable    ConflictKind = "resume_unusable"     // the token's snapshot is gone from the sender
	ConflictInitialFail       ConflictKind = "initial_replication" // nothing in common and initial=fail
)

// ErrConflict is wrapped by every ConflictError.
var ErrConflict = errors.New("replication conflict")

// ConflictError reports why a filesystem cannot be replicated without
// destroying data. Plan never proposes to destroy anything: an operator must
// resolve it.
type ConflictError struct {
	Filesystem string
	Kind       ConflictKind
	Detail     string
}

// Error describes the conflict.
func (e *ConflictError) Error() string {
	return fmt.Sprintf("%s: %s: %s", e.Filesystem, e.Kind, e.Detail)
}

// Unwrap returns ErrConflict.
func (e *ConflictError) Unwrap() error { return ErrConflict }

// Plan returns the steps that bring the receiver's copy of one filesystem up
// to date with the sender, oldest first:
//
//  1. a resume step when the receiver has a resume token;
//  2. when the receiver has no snapshot (after the resume), a full send of
//     the newest sender snapshot, or of the oldest followed by incrementals
//     (InitialAll);
//  3. otherwise an incremental step from the newest common version (a sender
//     snapshot, or a bookmark with the same GUID) to each newer sender
//     snapshot in turn.
//
// Versions are matched by GUID, never by name. When the receiver's newest
// snapshot is not on the sender (diverged) or nothing is in common, Plan
// returns a *ConflictError and no steps. An up-to-date filesystem gives no
// steps and no error. Plan is pure and deterministic.
func Plan(in PlanInput, cfg PlanConfig) ([]Step, error) {
	conflict := func(k ConflictKind, format string, args ...any) error {
		return &ConflictError{Filesystem: in.Filesystem, Kind: k, Detail: fmt.Sprintf(format, args...)}
	}
	sender := slices.Clone(in.Sender)
	zfs.SortVersions(sender)
	var snaps []zfs.Version
	byGUID := map[uint64]zfs.Version{} // a snapshot wins over a bookmark of the same GUID
	for _, v := range sender {
		if v.Type == zfs.Snapshot {
			snaps = append(snaps, v)
			byGUID[v.GUID] = v
		} else if _, ok := byGUID[v.GUID]; !ok {
			byGUID[v.GUID] = v
		}
	}
	var recv []zfs.Version
	for _, v := range in.Receiver {
		if v.Type == zfs.Snapshot {
			recv = append(recv, v)
		}
	}
	zfs.SortVersions(recv)

	var steps []Step
	var base *zfs.Version // newest common version, on the sender

	if in.Resume != nil {
		to, ok := byGUID[in.Resume.ToGUID]
		if !ok || to.Type != zfs.Snapshot {
			return nil, conflict(ConflictResumeUnusable,
				"the receiver's partial receive of %s (guid %d) cannot resume: the snapshot is no longer on the sender; abort it with `zfs receive -A`",
				in.Resume.ToName, in.Resume.ToGUID)
		}
		st := Step{Kind: StepResume, To: to, ResumeToken: in.Resume.Token, Raw: in.Resume.Raw}
		if from, ok := byGUID[in.Resume.FromGUID]; ok && in.Resume.FromGUID != 0 {
			// The step holds (and then releases) its source too: a run
			// killed in the middle of this step left its hold there.
			st.From = &from
		}
		steps = append(steps, st)
		base = &to
	} else if len(recv) > 0 {
		newest := recv[len(recv)-1]
		if v, ok := byGUID[newest.GUID]; ok {
			base = &v
		} else {
			for i := len(recv) - 2; i >= 0; i-- {
				if v, ok := byGUID[recv[i].GUID]; ok {
					return nil, conflict(ConflictDiverged,
						"the receiver's newest snapshot %s (guid %d) is not on the sender; the newest common version is %s; the receiver was left untouched",
						newest.RelName(), newest.GUID, v.RelName())
				}
			}
			return nil, conflict(ConflictNoCommon,
				"the receiver has %d snapshots (newest %s, guid %d) and none is on the sender; the receiver was left untouched",
				len(recv), newest.RelName(), newest.GUID)
		}
	}

	if base == nil {
		if len(snaps) == 0 {
			return nil, conflict(ConflictNoSenderSnapshots, "the sender has no snapshots")
		}
		switch cfg.Initial {
		case "", InitialMostRecent:
			steps = append(steps, Step{Kind: StepFull, To: snaps[len(snaps)-1], Raw: cfg.Raw})
			return steps, nil
		case InitialAll:
			first := snaps[0]
			steps = append(steps, Step{Kind: StepFull, To: first, Raw: cfg.Raw})
			base = &first
		case InitialFail:
			return nil, conflict(ConflictInitialFail, "nothing in common and initial replication is %q", cfg.Initial)
		default:
			return nil, fmt.Errorf("zfsrepl: unknown initial replication policy %q", cfg.Initial)
		}
	}

	from := *base
	for _, s := range snaps {
		if s.CreateTXG <= base.CreateTXG || s.GUID == base.GUID {
			continue
		}
		f := from
		steps = append(steps, Step{Kind: StepIncremental, From: &f, To: s, Raw: cfg.Raw})
		from = s
	}
	return steps, nil
}
