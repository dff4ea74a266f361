package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Progress reports a long operation's bytes as it runs, in the form the
// output calls for:
//   - on a terminal, a one-line bar redrawn four times a second;
//   - otherwise (a CronJob's log, a pipe) a log line every interval with the
//     bytes done, the total when known, the rate and the ETA, through the
//     logger (so --log-format json makes it JSON);
//   - with --json, a JSON status line on stderr every interval, whatever
//     stderr is, so that a program reading the output gets one format.
//
// Update may be called from several goroutines.
type Progress struct {
	label string
	start time.Time
	mu    sync.Mutex
	what  string
	done  int64
	total int64
	seen  bool // an update arrived: nothing is reported before
	stop  chan struct{}
	wg    sync.WaitGroup
}

// progressStatus is one --json status line.
type progressStatus struct {
	MessageType string  `json:"message_type"` // "status"
	Op          string  `json:"op"`
	What        string  `json:"what,omitempty"`
	BytesDone   int64   `json:"bytes_done"`
	TotalBytes  int64   `json:"total_bytes,omitempty"`
	PercentDone float64 `json:"percent_done,omitempty"`
	Rate        float64 `json:"bytes_per_second"`
	Elapsed     float64 `json:"seconds_elapsed"`
	ETA         float64 `json:"seconds_remaining,omitempty"`
}

// NewProgress starts reporting the progress of op (a label such as
// "backup") in the form App's flags and stderr call for; Finish ends it.
func (a *App) NewProgress(op string) *Progress {
	p := &Progress{label: op, start: time.Now()}
	switch {
	case a.JSON:
		if a.ProgressInterval > 0 {
			enc := json.NewEncoder(a.IO.Err)
			p.run(a.ProgressInterval, func(final bool) {
				if p.started() {
					_ = enc.Encode(p.status())
				}
			})
		}
	case IsTerminal(a.IO.Err):
		w := a.IO.Err
		p.run(250*time.Millisecond, func(final bool) {
			fmt.Fprintf(w, "\r%s ", p.line())
			if final {
				fmt.Fprintln(w)
			}
		})
	case a.ProgressInterval > 0:
		log := a.Logger()
		p.run(a.ProgressInterval, func(final bool) {
			if !final && p.started() { // the command logs its own result
				p.log(log)
			}
		})
	}
	return p
}

// run calls report every interval and once more, final, at Finish.
func (p *Progress) run(interval time.Duration, report func(final bool)) {
	p.stop = make(chan struct{})
	p.wg.Go(func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				report(false)
			case <-p.stop:
				report(true)
				return
			}
		}
	})
}

// Update records bytes done of total (0: unknown) for what is running (""
// for a single task). Done only grows while what stays the same: concurrent
// callers may report out of order.
func (p *Progress) Update(what string, done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if what != p.what {
		p.what, p.done = what, 0
	}
	p.done, p.total, p.seen = max(p.done, done), total, true
}

// Bytes is Update for a single task: the shape of the library's progress
// callbacks (done, total).
func (p *Progress) Bytes(done, total int64) { p.Update("", done, total) }

// Finish stops reporting; a terminal's line is ended.
func (p *Progress) Finish() {
	if p.stop != nil {
		close(p.stop)
		p.wg.Wait()
		p.stop = nil
	}
}

// started reports whether an update arrived.
func (p *Progress) started() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seen
}

// status is the progress now.
func (p *Progress) status() progressStatus {
	p.mu.Lock()
	what, done, total := p.what, p.done, p.total
	p.mu.Unlock()
	el := max(time.Since(p.start).Seconds(), 0.001)
	s := progressStatus{MessageType: "status", Op: p.label, What: what, BytesDone: done, TotalBytes: total,
		Rate: float64(done) / el, Elapsed: el}
	if total > 0 {
		s.PercentDone = min(float64(done)/float64(total), 1) * 100
		if s.Rate > 0 && done < total {
			s.ETA = float64(total-done) / s.Rate
		}
	}
	return s
}

// log writes the progress as one log line.
func (p *Progress) log(log *slog.Logger) {
	s := p.status()
	args := []any{"op", s.Op}
	if s.What != "" {
		args = append(args, "what", s.What)
	}
	args = append(args, "done", HumanBytes(s.BytesDone))
	if s.TotalBytes > 0 {
		args = append(args, "total", HumanBytes(s.TotalBytes), "percent", fmt.Sprintf("%.1f", s.PercentDone))
	}
	args = append(args, "rate", HumanBytes(int64(s.Rate))+"/s", "elapsed", time.Duration(s.Elapsed*float64(time.Second)).Round(time.Second))
	if s.ETA > 0 {
		args = append(args, "eta", time.Duration(s.ETA*float64(time.Second)).Round(time.Second))
	}
	log.Info("progress", args...)
}

// line is the terminal's progress line as drawn now.
func (p *Progress) line() string {
	s := p.status()
	out := p.label
	if s.What != "" {
		out += " " + s.What
	}
	if s.TotalBytes > 0 {
		const width = 30
		fill := int(s.PercentDone / 100 * width)
		out += fmt.Sprintf(" [%s%s] %3.0f%% %s / %s", strings.Repeat("=", fill), strings.Repeat(" ", width-fill),
			s.PercentDone, HumanBytes(s.BytesDone), HumanBytes(s.TotalBytes))
	} else {
		out += " " + HumanBytes(s.BytesDone)
	}
	out += "  " + HumanBytes(int64(s.Rate)) + "/s"
	if s.ETA > 0 {
		out += fmt.Sprintf("  ETA %s", time.Duration(s.ETA*float64(time.Second)).Round(time.Second))
	}
	return out
}

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	if s, ok := w.(*syncWriter); ok {
		w = s.unwrap()
	}
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
