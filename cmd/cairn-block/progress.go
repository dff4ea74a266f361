package main

import (
	"fmt"
	"github.com/cairn-backup/cairn/internal/cli"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// progress draws a one-line progress bar on a terminal; on anything else
// (a pipe, a log file, a test buffer) it stays silent so logs stay clean.
type progress struct {
	w           io.Writer
	label       string
	start       time.Time
	done, total atomic.Int64
	stop        chan struct{}
	wg          sync.WaitGroup
}

// newProgress starts a bar on w when w is a terminal; it returns a no-op
// progress otherwise.
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

// update records progress; the library calls it from several goroutines.
func (p *progress) update(done, total int64) {
	p.total.Store(total)
	for { // keep the maximum: concurrent callers may report out of order
		cur := p.done.Load()
		if done <= cur || p.done.CompareAndSwap(cur, done) {
			return
		}
	}
}

// finish stops the bar and ends its line.
func (p *progress) finish() {
	if p.stop != nil {
		close(p.stop)
		p.wg.Wait()
	}
}

// draw prints the bar: label, percentage, bytes and throughput.
func (p *progress) draw() {
	done, total := p.done.Load(), p.total.Load()
	frac := 1.0
	if total > 0 {
		frac = float64(done) / float64(total)
	}
	const width = 30
	fill := int(frac * width)
	bar := strings.Repeat("=", fill) + strings.Repeat(" ", width-fill)
	rate := float64(done) / max(time.Since(p.start).Seconds(), 0.001)
	fmt.Fprintf(p.w, "\r%s [%s] %3.0f%% %s / %s  %s/s ", p.label, bar, frac*100,
		cli.HumanBytes(done), cli.HumanBytes(total), cli.HumanBytes(int64(rate)))
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

// sortStrings sorts in place and returns s, for stable table output.
func sortStrings(s []string) []string {
	slices.Sort(s)
	return s
}
