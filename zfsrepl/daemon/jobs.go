package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/cairn-backup/cairn/zfsrepl"
	"github.com/cairn-backup/cairn/zfsrepl/config"
	"github.com/cairn-backup/cairn/zfsrepl/transport"
	"github.com/cairn-backup/cairn/zfsrepl/zfs"
)

// This file is the one builder of a configuration's jobs: the daemon and
// `cairn-zrepl replicate` / `serve` run what Env.BuildPush, BuildSnap and
// BuildSink return, so a job behaves the same (send.bandwidth_limit, the
// planner settings, pruning) whichever runs it.

func (e *Env) defaults(log *slog.Logger) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	runner := &zfs.Runner{Logger: log}
	if e.Local == nil {
		e.Local = func(j *config.Job) (Local, error) {
			return &zfsrepl.LocalSender{ZFS: runner, Job: j.Name, Filter: j.Filter}, nil
		}
	}
	if e.Remote == nil {
		e.Remote = func(j *config.Job) (zfsrepl.Receiver, io.Closer, error) {
			c, err := j.Dial(transport.ClientOptions{})
			if err != nil {
				return nil, nil, err
			}
			return c, c, nil
		}
	}
	if e.Sink == nil {
		e.Sink = func(j *config.Job, s *transport.Server) (*http.Server, net.Listener, bool, error) {
			s.Receivers = transport.SinkReceivers(runner, j.RootFS, j.Name)
			srv, tlsOn, err := j.SinkServer(s)
			if err != nil {
				return nil, nil, false, err
			}
			l, err := net.Listen("tcp", j.Serve.Listen)
			if err != nil {
				return nil, nil, false, fmt.Errorf("serve.listen: %w", err)
			}
			return srv, l, tlsOn, nil
		}
	}
	if e.Now == nil {
		e.Now = time.Now
	}
	if e.Sleep == nil {
		e.Sleep = sleepCtx
	}
}

// checkType returns an error when j is not a job of type typ.
func checkType(j *config.Job, typ string) error {
	if j.Type != typ {
		return fmt.Errorf("job %q is a %s job, not %s", j.Name, j.Type, typ)
	}
	return nil
}

// Push is a push job's endpoints, built by Env.BuildPush.
type Push struct {
	Job *config.Job
	// Local is the job's filesystems (listed, snapshotted, sent, pruned).
	Local Local
	// Sender is Local with send.bandwidth_limit applied to its streams.
	Sender zfsrepl.Sender
	// Remote is the sink.
	Remote zfsrepl.Receiver
	closer io.Closer
}

// BuildPush returns the endpoints of push job j; Close them after use.
func (e Env) BuildPush(j *config.Job, log *slog.Logger) (*Push, error) {
	if err := checkType(j, "push"); err != nil {
		return nil, err
	}
	e.defaults(log)
	local, err := e.Local(j)
	if err != nil {
		return nil, err
	}
	remote, closer, err := e.Remote(j)
	if err != nil {
		return nil, err
	}
	p := &Push{Job: j, Local: local, Sender: local, Remote: remote, closer: closer}
	if l := j.Send.BandwidthLimit; l.Rate > 0 {
		p.Sender = limitedSender{Local: local, rate: l.Rate, burst: l.Burst, sleep: e.Sleep}
	}
	return p, nil
}

// Close closes the connection to the sink.
func (p *Push) Close() error {
	if p.closer == nil {
		return nil
	}
	return p.closer.Close()
}

// Replicate runs one replication round of the job (it takes no snapshot).
// progress, when not nil, gets each step's bytes so far.
func (p *Push) Replicate(ctx context.Context, log *slog.Logger, progress func(fs string, st zfsrepl.Step, n int64)) *zfsrepl.Report {
	return zfsrepl.Replicate(ctx, p.Sender, p.Remote, zfsrepl.Config{Job: p.Job.Name, Plan: p.Job.Plan, Logger: log, Progress: progress})
}

// Prune prunes both sides by the job's keep_sender and keep_receiver.
func (p *Push) Prune(ctx context.Context, now time.Time, log *slog.Logger) ([]zfsrepl.PruneReport, error) {
	pr := p.Job.Pruning
	return zfsrepl.PrunePush(ctx, p.Local, p.Remote, pr.KeepSender, pr.KeepReceiver, zfsrepl.PruneOptions{Job: p.Job.Name, Now: now, Logger: log})
}

// Snap is a snap job's endpoint, built by Env.BuildSnap.
type Snap struct {
	Job   *config.Job
	Local Local
}

// BuildSnap returns the endpoint of snap job j.
func (e Env) BuildSnap(j *config.Job, log *slog.Logger) (*Snap, error) {
	if err := checkType(j, "snap"); err != nil {
		return nil, err
	}
	e.defaults(log)
	local, err := e.Local(j)
	if err != nil {
		return nil, err
	}
	return &Snap{Job: j, Local: local}, nil
}

// Prune prunes the job's filesystems by its keep rules.
func (s *Snap) Prune(ctx context.Context, now time.Time, log *slog.Logger) ([]zfsrepl.PruneReport, error) {
	return zfsrepl.PruneLocal(ctx, s.Local, s.Job.Pruning.Keep, zfsrepl.PruneOptions{Job: s.Job.Name, Now: now, Logger: log})
}

// Sink is a sink job's server and listener, built by Env.BuildSink.
type Sink struct {
	Job      *config.Job
	Server   *http.Server
	Listener net.Listener
	// TLS says whether Serve speaks TLS (serve.type tls).
	TLS bool
}

// BuildSink returns the server of sink job j, listening; the server's
// logger is log.
func (e Env) BuildSink(j *config.Job, log *slog.Logger) (*Sink, error) {
	if err := checkType(j, "sink"); err != nil {
		return nil, err
	}
	e.defaults(log)
	srv, l, tlsOn, err := e.Sink(j, &transport.Server{Logger: log})
	if err != nil {
		return nil, err
	}
	return &Sink{Job: j, Server: srv, Listener: l, TLS: tlsOn}, nil
}

// Serve serves until ctx is done, then lets running receives end for up to
// grace before it cuts them (they keep their resume tokens). It returns
// nil after ctx is done, or the error that stopped the server.
func (s *Sink) Serve(ctx context.Context, grace time.Duration) error {
	errc := make(chan error, 1)
	go func() {
		if s.TLS {
			errc <- s.Server.ServeTLS(s.Listener, "", "")
		} else {
			errc <- s.Server.Serve(s.Listener)
		}
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("sink %s: %w", s.Job.Name, err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		if err := s.Server.Shutdown(sctx); err != nil {
			s.Server.Close()
		}
		return nil
	}
}
