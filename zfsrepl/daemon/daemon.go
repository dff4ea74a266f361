// Package daemon runs the jobs of a cairn-zrepl configuration the way zrepl's
// daemon does: push jobs (snapshot -> replicate -> prune both sides), sink
// jobs (serve a push job's replication and receiver-side pruning below
// root_fs/<client>) and snap jobs (snapshot -> prune locally). It serves
// status and wakeup on a unix control socket and Prometheus metrics on the
// configured listener. Every per-job series exists from New on (counters at
// 0, cairn_zrepl_last_success_timestamp_seconds at 0 until the job's first
// successful run), and cairn_zrepl_daemon_start_timestamp_seconds is the
// time Run started, so an alert can tell "never succeeded" from "just
// started".
//
// Shutdown cancels the running step: zfs send stops, the sink keeps the
// partial receive's resume token, holds are released, and the next run
// resumes the step.
//
// A job's State in Status is what it does now: snapshotting (a round of the
// periodic or cron snapshotter, its hooks included), replicating, pruning, serving
// (a sink), or, between runs, idle after a run that succeeded and error
// after one that failed (LastError says why; the next run that succeeds
// clears both). A run of a push or snap job is the snapshot round that
// triggered it (when it did), then replication and pruning: a failed
// snapshot round fails the run even when replication and pruning succeed.
// The periodic snapshotter does not wait for a running replication (as
// zrepl's): while a round overlaps a run, State is snapshotting, then
// returns to the run's phase.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cairn-backup/cairn/zfsrepl"
	"github.com/cairn-backup/cairn/zfsrepl/config"
	"github.com/cairn-backup/cairn/zfsrepl/transport"
)

// Local is the local side of a push or snap job: it lists, snapshots,
// sends and prunes the job's filesystems (zfsrepl.LocalSender).
type Local interface {
	zfsrepl.SenderPruner
	zfsrepl.SnapshotTarget
}

// Env builds a job's endpoints. The zero value uses the local zfs command
// and the transports of the configuration.
type Env struct {
	// Local returns the local side of a push or snap job.
	Local func(j *config.Job) (Local, error)
	// Remote returns a push job's receiver (the sink) and what closes it.
	Remote func(j *config.Job) (zfsrepl.Receiver, io.Closer, error)
	// Sink returns a sink job's HTTP server and listener.
	Sink func(j *config.Job, s *transport.Server) (*http.Server, net.Listener, bool, error)
	// Now is the clock of snapshot names and pruning; nil is time.Now.
	Now func() time.Time
	// After is the timer of the periodic snapshotter, Now's time.After;
	// nil is time.After (set it with a fake Now).
	After func(d time.Duration) <-chan time.Time
	// Sleep is the wait of send.bandwidth_limit (on the real clock,
	// whatever Now is); nil is a timer.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Job states in Status.
const (
	StateIdle         = "idle"         // waiting for the next run; the last one succeeded
	StateError        = "error"        // waiting for the next run; the last one failed (LastError)
	StateSnapshotting = "snapshotting" // taking snapshots, running their hooks
	StateReplicating  = "replicating"  // replicating
	StatePruning      = "pruning"      // pruning
	StateServing      = "serving"      // a sink serving
	StateStopped      = "stopped"      // the daemon is shutting down
)

// activity is what a job is doing, from which its State follows.
type activity struct {
	phase        string // StateReplicating, StatePruning, StateServing, or "" between runs
	snapshotting bool   // a snapshot round is running
	stopped      bool
	// snapErr is the error of the snapshot rounds since the last run: the
	// next run reports it.
	snapErr error
}

// state returns the State of a job doing a whose status is s.
func (a *activity) state(s *Status) string {
	switch {
	case a.stopped:
		return StateStopped
	case a.snapshotting:
		return StateSnapshotting
	case a.phase != "":
		return a.phase
	case s.LastError != "":
		return StateError
	}
	return StateIdle
}

// Status is the state of one job, as `status` prints it.
type Status struct {
	Name string `json:"name"`
	Type string `json:"type"`
	// State is one of the State constants: what the job does now, or,
	// between runs, idle or error after the last run.
	State string `json:"state"`
	// Runs counts completed runs (replication or snap rounds).
	Runs        int       `json:"runs"`
	LastStart   time.Time `json:"last_start,omitzero"`
	LastEnd     time.Time `json:"last_end,omitzero"`
	LastSuccess time.Time `json:"last_success,omitzero"`
	// LastError is the last run's error, "" when it succeeded.
	LastError string `json:"last_error,omitempty"`
	// Bytes is what the last run replicated; TotalBytes since start;
	// StepBytes the progress of the running step.
	Bytes      int64 `json:"bytes"`
	TotalBytes int64 `json:"total_bytes"`
	StepBytes  int64 `json:"step_bytes,omitempty"`
	Errors     int   `json:"errors"`
	// Pruned counts the snapshots destroyed by the last run, per side.
	Pruned map[string]int `json:"pruned,omitempty"`
	// Last reports.
	Snapshot    *zfsrepl.SnapshotReport `json:"snapshot,omitempty"`
	Replication *zfsrepl.Report         `json:"replication,omitempty"`
	Prune       []zfsrepl.PruneReport   `json:"prune,omitempty"`
	Listen      string                  `json:"listen,omitempty"`
}

// Daemon runs the jobs of a configuration.
type Daemon struct {
	cfg     *config.Config
	env     Env
	log     *slog.Logger
	reg     *prometheus.Registry
	metrics *metrics

	mu     sync.Mutex
	status map[string]*Status
	act    map[string]*activity
	wakeup map[string]chan struct{}
	abort  map[string]context.CancelCauseFunc // of the running run, per job
}

// New prepares the daemon of cfg; Run starts it.
func New(cfg *config.Config, env Env, log *slog.Logger) (*Daemon, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	env.defaults(log)
	d := &Daemon{cfg: cfg, env: env, log: log, reg: prometheus.NewRegistry(),
		status: map[string]*Status{}, act: map[string]*activity{}, wakeup: map[string]chan struct{}{},
		abort: map[string]context.CancelCauseFunc{}}
	d.metrics = newMetrics(d.reg)
	for _, j := range cfg.Jobs {
		d.status[j.Name] = &Status{Name: j.Name, Type: j.Type, State: StateIdle}
		d.act[j.Name] = &activity{}
		d.wakeup[j.Name] = make(chan struct{}, 1)
		// Export the job's series from the start, at zero, so that an
		// alert on time() - cairn_zrepl_last_success_timestamp_seconds
		// fires for a job that never succeeded since the daemon started.
		switch j.Type {
		case "push":
			d.metrics.bytes.WithLabelValues(j.Name)
			d.metrics.snapshots.WithLabelValues(j.Name)
			for _, p := range []string{"snapshot", "replication", "pruning"} {
				d.metrics.errors.WithLabelValues(j.Name, p)
			}
			d.metrics.pruned.WithLabelValues(j.Name, zfsrepl.SideSender)
			d.metrics.pruned.WithLabelValues(j.Name, zfsrepl.SideReceiver)
			d.metrics.duration.WithLabelValues(j.Name, "replication")
			d.metrics.duration.WithLabelValues(j.Name, "pruning")
			d.metrics.lastSuccess.WithLabelValues(j.Name).Set(0)
		case "snap":
			d.metrics.snapshots.WithLabelValues(j.Name)
			d.metrics.errors.WithLabelValues(j.Name, "snapshot")
			d.metrics.errors.WithLabelValues(j.Name, "pruning")
			d.metrics.pruned.WithLabelValues(j.Name, zfsrepl.SideLocal)
			d.metrics.duration.WithLabelValues(j.Name, "pruning")
			d.metrics.lastSuccess.WithLabelValues(j.Name).Set(0)
		}
	}
	return d, nil
}

// Registry returns the daemon's Prometheus registry.
func (d *Daemon) Registry() *prometheus.Registry { return d.reg }

// Status returns a copy of every job's status, sorted by name.
func (d *Daemon) Status() []Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []Status
	for _, s := range d.status {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// update changes a job's status and activity under the lock, then derives
// its State.
func (d *Daemon) update(job string, f func(s *Status, a *activity)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, a := d.status[job], d.act[job]
	f(s, a)
	s.State = a.state(s)
}

// ErrNoJob is returned by Wakeup for an unknown job.
var ErrNoJob = errors.New("no such job")

// Wakeup starts a push job's replication (or a snap job's pruning) now, as
// `zrepl signal wakeup JOB`; it does not take snapshots.
func (d *Daemon) Wakeup(job string) error {
	ch, ok := d.wakeup[job]
	if !ok {
		return fmt.Errorf("%w %q", ErrNoJob, job)
	}
	select {
	case ch <- struct{}{}:
	default: // a wakeup is already pending
	}
	return nil
}

// ErrReset is the error of a run aborted by Reset.
var ErrReset = errors.New("run aborted by signal reset")

// Reset aborts the running run of a push or snap job, as `zrepl signal
// reset JOB`: its step stops (the receiver keeps a resumable partial
// receive, which the next run resumes), pruning is skipped, and the run
// ends in error with ErrReset. The job then waits for its next run. It
// reports whether a run was aborted.
func (d *Daemon) Reset(job string) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.status[job]; !ok {
		return false, fmt.Errorf("%w %q", ErrNoJob, job)
	}
	abort := d.abort[job]
	if abort != nil {
		abort(ErrReset)
	}
	return abort != nil, nil
}

// runContext returns the context of a job's run, which Reset cancels, and
// what ends it.
func (d *Daemon) runContext(ctx context.Context, job string) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	d.mu.Lock()
	d.abort[job] = cancel
	d.mu.Unlock()
	return ctx, func() {
		d.mu.Lock()
		delete(d.abort, job)
		d.mu.Unlock()
		cancel(nil)
	}
}

// Run runs every job, the control socket (sock, "" for none) and the
// monitoring listeners until ctx is done, then shuts down and returns nil,
// or returns the first error that stops a job or listener from starting.
func (d *Daemon) Run(ctx context.Context, sock string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	d.metrics.started.Set(float64(d.env.Now().Unix()))
	var wg sync.WaitGroup
	errc := make(chan error, len(d.cfg.Jobs)+2)
	var closers []func()
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	if sock != "" {
		stop, err := d.serveControl(sock)
		if err != nil {
			return err
		}
		closers = append(closers, stop)
	}
	for _, m := range d.cfg.Global.Monitoring {
		l, err := net.Listen("tcp", m.Listen)
		if err != nil {
			return fmt.Errorf("monitoring listener: %w", err)
		}
		srv := &http.Server{Handler: promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.Serve(l) }()
		closers = append(closers, func() { srv.Close() })
		d.log.Info("prometheus metrics", "listen", l.Addr().String())
	}
	for i := range d.cfg.Jobs {
		j := &d.cfg.Jobs[i]
		var run func(context.Context, *config.Job) error
		switch j.Type {
		case "push":
			run = d.runPush
		case "snap":
			run = d.runSnap
		case "sink":
			run = d.runSink
		default:
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(ctx, j); err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("job %s: %w", j.Name, err)
			}
		}()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		cancel()
	}
	wg.Wait()
	for _, j := range d.cfg.Jobs {
		d.update(j.Name, func(_ *Status, a *activity) { a.stopped = true })
	}
	d.log.Info("daemon stopped")
	return err
}

func (d *Daemon) runSink(ctx context.Context, j *config.Job) error {
	log := d.log.With("job", j.Name)
	sink, err := d.env.BuildSink(j, log)
	if err != nil {
		return err
	}
	addr := sink.Listener.Addr().String()
	d.update(j.Name, func(s *Status, a *activity) { a.phase, s.Listen = StateServing, addr })
	log.Info("sink serving", "listen", addr, "root_fs", j.RootFS)
	// On shutdown, running receives get 10 s to end, then are cut (they
	// keep resume tokens).
	return sink.Serve(ctx, 10*time.Second)
}

// snapshotLoop runs the periodic snapshotter of a job and wakes the job up
// after each round; with manual snapshotting it does nothing.
func (d *Daemon) snapshotLoop(ctx context.Context, j *config.Job, local Local) {
	sn := j.Snapshotting
	if sn.Type != "periodic" && sn.Type != "cron" {
		return
	}
	cfg := sn.SnapshotConfig()
	cfg.Now, cfg.After, cfg.Logger = d.env.Now, d.env.After, d.log.With("job", j.Name)
	cfg.Start = func() { d.update(j.Name, func(_ *Status, a *activity) { a.snapshotting = true }) }
	_ = zfsrepl.RunPeriodic(ctx, local, cfg, func(r *zfsrepl.SnapshotReport) {
		d.metrics.snapshots.WithLabelValues(j.Name).Add(float64(len(r.Taken)))
		if r.Err() != nil {
			d.metrics.errors.WithLabelValues(j.Name, "snapshot").Inc()
		}
		d.update(j.Name, func(s *Status, a *activity) {
			s.Snapshot, a.snapshotting = r, false
			a.snapErr = errors.Join(a.snapErr, r.Err())
		})
		_ = d.Wakeup(j.Name)
	})
}

// startRun marks the start of a run in phase and returns the errors of the
// snapshot rounds that preceded it.
func (d *Daemon) startRun(job, phase string, start time.Time) error {
	var snapErr error
	d.update(job, func(s *Status, a *activity) {
		a.phase, s.LastStart, s.StepBytes = phase, start, 0
		snapErr, a.snapErr = a.snapErr, nil
	})
	return snapErr
}

func (d *Daemon) runPush(ctx context.Context, j *config.Job) error {
	p, err := d.env.BuildPush(j, d.log)
	if err != nil {
		return err
	}
	defer p.Close()
	wake := d.wakeup[j.Name]
	go d.snapshotLoop(ctx, j, p.Local)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		}
		d.pushOnce(ctx, p)
	}
}

// pushOnce replicates and prunes once.
func (d *Daemon) pushOnce(ctx context.Context, p *Push) {
	j := p.Job
	ctx, done := d.runContext(ctx, j.Name)
	defer done()
	log := d.log.With("job", j.Name)
	start := d.env.Now()
	snapErr := d.startRun(j.Name, StateReplicating, start)
	rep := p.Replicate(ctx, log, func(_ string, _ zfsrepl.Step, n int64) {
		d.update(j.Name, func(s *Status, _ *activity) { s.StepBytes = n })
	})
	bytes := rep.Bytes()
	d.metrics.bytes.WithLabelValues(j.Name).Add(float64(bytes))
	d.metrics.duration.WithLabelValues(j.Name, "replication").Observe(rep.End.Sub(rep.Start).Seconds())
	repErr := rep.Err()
	if repErr != nil {
		d.metrics.errors.WithLabelValues(j.Name, "replication").Inc()
		log.Error("replication failed", "err", repErr)
	}
	if ctx.Err() != nil {
		d.finish(j.Name, start, rep, nil, bytes, errors.Join(snapErr, context.Cause(ctx)))
		return
	}
	d.update(j.Name, func(_ *Status, a *activity) { a.phase = StatePruning })
	t0 := time.Now()
	preps, pruneErr := p.Prune(ctx, d.env.Now(), log)
	d.metrics.duration.WithLabelValues(j.Name, "pruning").Observe(time.Since(t0).Seconds())
	if ctx.Err() != nil {
		pruneErr = context.Cause(ctx)
	}
	if pruneErr != nil {
		d.metrics.errors.WithLabelValues(j.Name, "pruning").Inc()
		log.Error("pruning failed", "err", pruneErr)
	}
	d.finish(j.Name, start, rep, preps, bytes, errors.Join(snapErr, repErr, pruneErr))
}

func (d *Daemon) finish(job string, start time.Time, rep *zfsrepl.Report, preps []zfsrepl.PruneReport, bytes int64, err error) {
	pruned := map[string]int{}
	for _, p := range preps {
		pruned[p.Side] += len(p.Destroyed)
		d.metrics.pruned.WithLabelValues(job, p.Side).Add(float64(len(p.Destroyed)))
	}
	end := d.env.Now()
	if err == nil {
		d.metrics.lastSuccess.WithLabelValues(job).Set(float64(end.Unix()))
	}
	d.update(job, func(s *Status, a *activity) {
		a.phase, s.LastEnd, s.Runs, s.Bytes, s.StepBytes = "", end, s.Runs+1, bytes, 0
		s.TotalBytes += bytes
		s.Replication, s.Prune, s.Pruned = rep, preps, pruned
		s.LastError = ""
		if err != nil {
			s.LastError, s.Errors = err.Error(), s.Errors+1
		} else {
			s.LastSuccess = end
		}
	})
}

func (d *Daemon) runSnap(ctx context.Context, j *config.Job) error {
	sn, err := d.env.BuildSnap(j, d.log)
	if err != nil {
		return err
	}
	wake := d.wakeup[j.Name]
	go d.snapshotLoop(ctx, j, sn.Local)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		}
		start := d.env.Now()
		snapErr := d.startRun(j.Name, StatePruning, start)
		rctx, done := d.runContext(ctx, j.Name)
		preps, err := sn.Prune(rctx, d.env.Now(), d.log.With("job", j.Name))
		if rctx.Err() != nil {
			err = context.Cause(rctx)
		}
		done()
		if err != nil {
			d.metrics.errors.WithLabelValues(j.Name, "pruning").Inc()
		}
		d.finish(j.Name, start, nil, preps, 0, errors.Join(snapErr, err))
	}
}
