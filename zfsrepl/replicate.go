package zfsrepl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/cairn-backup/cairn/zfsrepl/zfs"
)

// Config configures one replication round.
type Config struct {
	// Job is the push job's name (cursor bookmarks, step holds).
	Job  string
	Plan PlanConfig
	// Logger gets one line per filesystem and step; nil discards.
	Logger *slog.Logger
	// Progress, if set, is called with the bytes of the current stream read
	// so far; the daemon (status) uses it.
	Progress func(fs string, step Step, bytes int64)
}

// Filesystem states in a Report.
const (
	StateDone     = "done"       // every planned step ran
	StateUpToDate = "up_to_date" // nothing to do
	StateConflict = "conflict"   // planning found a conflict; nothing changed
	StateFailed   = "failed"     // an error stopped the filesystem
)

// StepReport is the outcome of one step.
type StepReport struct {
	Kind     StepKind      `json:"kind"`
	From     string        `json:"from,omitempty"`
	To       string        `json:"to"`
	Bytes    int64         `json:"bytes"`       // stream bytes read from zfs send
	Duration time.Duration `json:"duration_ns"` // the whole step: holds, stream, cursor
	// Transfer is the time of the stream alone: from zfs send's start to the
	// receiver's acknowledgement.
	Transfer time.Duration `json:"transfer_ns"`
	Error    string        `json:"error,omitempty"`
}

// FilesystemReport is the outcome for one filesystem.
type FilesystemReport struct {
	Filesystem string       `json:"filesystem"`
	State      string       `json:"state"`
	Conflict   ConflictKind `json:"conflict,omitempty"`
	Error      string       `json:"error,omitempty"`
	Steps      []StepReport `json:"steps,omitempty"`
	Bytes      int64        `json:"bytes"`
	err        error
}

// Err returns the error of a conflicted or failed filesystem.
func (f FilesystemReport) Err() error { return f.err }

// Report is the outcome of one replication round.
type Report struct {
	Job         string             `json:"job"`
	Start       time.Time          `json:"start"`
	End         time.Time          `json:"end"`
	Error       string             `json:"error,omitempty"` // a failure before any filesystem
	Filesystems []FilesystemReport `json:"filesystems"`
	err         error
}

// Err returns nil when every filesystem is done or up to date, else an error
// joining each failure.
func (r *Report) Err() error {
	errs := []error{r.err}
	for _, f := range r.Filesystems {
		errs = append(errs, f.err)
	}
	return errors.Join(errs...)
}

// Bytes is the total of stream bytes sent.
func (r *Report) Bytes() int64 {
	var n int64
	for _, f := range r.Filesystems {
		n += f.Bytes
	}
	return n
}

// Replicate runs one replication round from sender to receiver: for each of
// the sender's filesystems, parents first, it plans (Plan) and runs the steps
// in order. A conflict or a failure stops that filesystem only. Nothing on the
// receiver is destroyed. The round stops early only when ctx is done.
func Replicate(ctx context.Context, sender Sender, receiver Receiver, cfg Config) *Report {
	rep := &Report{Job: cfg.Job, Start: time.Now()}
	defer func() { rep.End = time.Now() }()
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := ValidateJobName(cfg.Job); err != nil {
		rep.err, rep.Error = err, err.Error()
		return rep
	}
	fss, err := sender.ListFilesystems(ctx)
	if err != nil {
		rep.err = fmt.Errorf("listing the sender's filesystems: %w", err)
		rep.Error = rep.err.Error()
		return rep
	}
	slices.SortFunc(fss, func(a, b zfs.Filesystem) int {
		if a.Name < b.Name {
			return -1
		} else if a.Name > b.Name {
			return 1
		}
		return 0
	})
	for _, f := range fss {
		if ctx.Err() != nil {
			rep.err = ctx.Err()
			rep.Error = rep.err.Error()
			break
		}
		fr := replicateFilesystem(ctx, sender, receiver, cfg, log.With("fs", f.Name), f.Name)
		rep.Filesystems = append(rep.Filesystems, fr)
	}
	return rep
}

func replicateFilesystem(ctx context.Context, sender Sender, receiver Receiver, cfg Config, log *slog.Logger, fs string) (fr FilesystemReport) {
	fr = FilesystemReport{Filesystem: fs}
	fail := func(err error) FilesystemReport {
		fr.err = fmt.Errorf("%s: %w", fs, err)
		fr.State, fr.Error = StateFailed, err.Error()
		var ce *ConflictError
		if errors.As(err, &ce) {
			fr.err = err
			fr.State, fr.Conflict = StateConflict, ce.Kind
		}
		log.Error("replication failed", "state", fr.State, "err", err)
		return fr
	}
	sv, err := sender.ListVersions(ctx, fs)
	if err != nil {
		return fail(fmt.Errorf("listing sender versions: %w", err))
	}
	rv, err := receiver.ListVersions(ctx, fs)
	if err != nil {
		return fail(fmt.Errorf("listing receiver versions: %w", err))
	}
	token, err := receiver.ResumeToken(ctx, fs)
	if err != nil {
		return fail(fmt.Errorf("reading the receiver's resume token: %w", err))
	}
	in := PlanInput{Filesystem: fs, Sender: sv, Receiver: rv}
	if token != "" {
		ri, err := sender.ParseResumeToken(ctx, token)
		if err != nil {
			return fail(fmt.Errorf("reading the receiver's resume token: %w", err))
		}
		in.Resume = &ri
	}
	steps, err := Plan(in, cfg.Plan)
	if err != nil {
		return fail(err)
	}
	if len(steps) == 0 {
		fr.State = StateUpToDate
		log.Info("up to date")
		return fr
	}
	for _, st := range steps {
		sr, err := runStep(ctx, sender, receiver, cfg, fs, st)
		fr.Steps = append(fr.Steps, sr)
		fr.Bytes += sr.Bytes
		if err != nil {
			return fail(fmt.Errorf("step %s: %w", st, err))
		}
		log.Info("step done", "step", st.String(), "bytes", sr.Bytes, "duration", sr.Duration)
	}
	fr.State = StateDone
	return fr
}

// runStep holds, sends, receives, moves the cursor and releases.
func runStep(ctx context.Context, sender Sender, receiver Receiver, cfg Config, fs string, st Step) (sr StepReport, err error) {
	start := time.Now()
	sr = StepReport{Kind: st.Kind, To: st.To.RelName()}
	if st.From != nil {
		sr.From = st.From.RelName()
	}
	defer func() {
		sr.Duration = time.Since(start)
		if err != nil {
			sr.Error = err.Error()
		}
	}()
	if err := sender.HoldStep(ctx, fs, st); err != nil {
		return sr, err
	}
	defer func() {
		// Release even when ctx is cancelled: a stale step hold would block pruning.
		if rerr := sender.ReleaseStep(context.WithoutCancel(ctx), fs, st); rerr != nil && err == nil {
			err = rerr
		}
	}()
	t0 := time.Now()
	stream, err := sender.Send(ctx, fs, st)
	if err != nil {
		return sr, fmt.Errorf("send: %w", err)
	}
	cr := &countingReader{r: stream}
	if cfg.Progress != nil {
		cr.progress = func(n int64) { cfg.Progress(fs, st, n) }
	}
	recvErr := receiver.Receive(ctx, ReceiveRequest{Filesystem: fs, Step: st}, cr)
	closeErr := stream.Close()
	sr.Transfer = time.Since(t0)
	sr.Bytes = cr.n.Load()
	if recvErr != nil {
		if closeErr != nil {
			return sr, fmt.Errorf("receive: %w (send: %w)", recvErr, closeErr)
		}
		return sr, fmt.Errorf("receive: %w", recvErr)
	}
	if closeErr != nil {
		return sr, fmt.Errorf("send: %w", closeErr)
	}
	if err := sender.MoveCursor(ctx, fs, st.To); err != nil {
		return sr, err
	}
	return sr, nil
}

type countingReader struct {
	r        io.Reader
	n        atomic.Int64
	progress func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	t := c.n.Add(int64(n))
	if c.progress != nil && n > 0 {
		c.progress(t)
	}
	return n, err
}
