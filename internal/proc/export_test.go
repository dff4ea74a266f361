package proc

import "time"

// SetGrace shortens Grace for a test.
func SetGrace(d time.Duration) (restore func()) {
	old := grace
	grace = d
	return func() { grace = old }
}

// Pid returns the child's process ID.
func (r *Reader) Pid() int { return r.ch.proc.Pid }
