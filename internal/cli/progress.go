package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Progress draws a one-line progress report on a terminal, four times a
// second: a label, what runs (when told), a bar and percentage when the
// total is known or the bytes so far otherwise, and the rate. On anything
// but a terminal (a pipe, a log file, a test buffer) it stays silent, so
// that logs stay clean. Update may be called from several goroutines.
type Progress struct {
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

// NewProgress starts a progress line on w when w is a terminal; otherwise
// the returned Progress records updates and draws nothing.
func NewProgress(w io.Writer, label string) *Progress {
	p := &Progress{w: w, label: label, start: time.Now()}
	if !IsTerminal(w) {
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

// Update records bytes done of total (0: unknown) for what is running (""
// for a single task). Done only grows while what stays the same: concurrent
// callers may report out of order.
func (p *Progress) Update(what string, done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if what != p.what {
		p.what, p.done = what, 0
	}
	p.done, p.total = max(p.done, done), total
}

// Bytes is Update for a single task: the shape of the library's progress
// callbacks (done, total).
func (p *Progress) Bytes(done, total int64) { p.Update("", done, total) }

// Finish stops drawing and ends the line.
func (p *Progress) Finish() {
	if p.stop != nil {
		close(p.stop)
		p.wg.Wait()
	}
}

// line is the progress line as drawn now.
func (p *Progress) line() string {
	p.mu.Lock()
	what, done, total := p.what, p.done, p.total
	p.mu.Unlock()
	s := p.label
	if what != "" {
		s += " " + what
	}
	if total > 0 {
		frac := min(float64(done)/float64(total), 1)
		const width = 30
		fill := int(frac * width)
		s += fmt.Sprintf(" [%s%s] %3.0f%% %s / %s", strings.Repeat("=", fill), strings.Repeat(" ", width-fill),
			frac*100, HumanBytes(done), HumanBytes(total))
	} else {
		s += " " + HumanBytes(done)
	}
	rate := float64(done) / max(time.Since(p.start).Seconds(), 0.001)
	return s + "  " + HumanBytes(int64(rate)) + "/s"
}

func (p *Progress) draw() { fmt.Fprintf(p.w, "\r%s ", p.line()) }

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
