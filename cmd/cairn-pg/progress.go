package main

import (
	"fmt"
	"github.com/cairn-backup/cairn/internal/cli"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// progress draws a one-line status on a terminal: what runs, bytes so far
// (of the total when known) and the rate; elsewhere it stays silent.
type progress struct {
	w     io.Writer
	label string
	start time.Time
	mu    sync.Mutex
	what  string
	done  int64
	total int64
	stop  chan struct{}
	wg    sync.WaitGroup
}

func newProgress(w io.Writer, label string) *progress {
	p := &progress{w: w, label: label, start: time.Now()}
	if !isTerminal(w) {
		return p
	}
	p.stop = make(chan struct{})
	p.wg.Go(func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				p.draw()
			case <-p.stop:
				p.draw()
				fmt.Fprintln(p.w)
				return
			}
		}
	})
	return p
}

// update records progress: the running program (or ""), bytes done, total (0: unknown).
func (p *progress) update(what string, done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if what != p.what {
		p.what, p.done = what, 0
	}
	p.done, p.total = max(p.done, done), total
}

func (p *progress) finish() {
	if p.stop != nil {
		close(p.stop)
		p.wg.Wait()
	}
}

func (p *progress) draw() {
	p.mu.Lock()
	what, done, total := p.what, p.done, p.total
	p.mu.Unlock()
	rate := float64(done) / max(time.Since(p.start).Seconds(), 0.001)
	s := p.label
	if what != "" {
		s += " " + what
	}
	if total > 0 {
		s += fmt.Sprintf(" %3.0f%% %s / %s", 100*float64(done)/float64(total), cli.HumanBytes(done), cli.HumanBytes(total))
	} else {
		s += " " + cli.HumanBytes(done)
	}
	fmt.Fprintf(p.w, "\r%s  %s/s ", s, cli.HumanBytes(int64(rate)))
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
