// Package proc runs the child processes of cairn (pg_dumpall, pg_dump, psql,
// pg_restore, zfs send and receive, ...) one way:
//
//   - a stream from a child's stdout (Cmd.Reader) reports the child's failure
//     in place of io.EOF: a reader sees EOF only after the child exited with
//     status 0, so a child that fails mid-stream never looks like a clean end;
//   - a stream into a child's stdin (Cmd.Writer) ends with the child's result;
//   - errors are *Error: the program, how it ended and the last TailSize bytes
//     of its stderr;
//   - a child stops the same way whatever stops it (its context, or a caller
//     that gives up on the stream): SIGTERM, then SIGKILL after Grace. It is
//     reaped as soon as it exits, and no read or write of its pipes outlasts
//     the stop: a stopped child's stdout stream is cut at once, its stdin
//     stream once it is gone, so a grandchild that holds a pipe cannot make
//     a reader or writer hang.
//
// Pipes to and from streamed children are enlarged to PipeSize.
package proc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Limits that every child process of cairn shares.
const (
	// TailSize is how many bytes of a child's stderr (the last ones) an
	// *Error keeps.
	TailSize = 8 << 10
	// Grace is how long a child has to exit after SIGTERM before SIGKILL.
	Grace = 5 * time.Second
	// PipeSize is the buffer of the pipes of streamed children.
	PipeSize = 1 << 20
)

// grace is Grace; tests shorten it.
var grace = Grace

// Cmd describes a child process. Its methods start it; a Cmd may be started
// more than once.
type Cmd struct {
	// Path is the program: a path, or a name looked up in PATH.
	Path string
	// Args are its arguments, without the program.
	Args []string
	// Env is its environment; nil means this process's.
	Env []string
	// Dir is its working directory; "" means this process's.
	Dir string
	// SysProcAttr holds system-specific attributes (e.g. credentials).
	SysProcAttr *syscall.SysProcAttr
	// Program names the child in errors and log lines; "" means the base
	// name of Path.
	Program string
	// Stderr, when set, receives the child's stderr as well as the tail.
	Stderr io.Writer
	// Logger, when set, receives the child's stderr at debug level, a record
	// per line.
	Logger *slog.Logger
	// Batch batches the reads of a Reader for a child that writes in small
	// pieces (pg_dump writes 8 KiB at a time): after a read shorter than
	// 256 KiB, the next one waits a millisecond first, so the reader makes
	// tens instead of thousands of reads and wake-ups a second. The enlarged
	// pipe holds several milliseconds of a fast child's output, so the child
	// never blocks on the pause.
	Batch bool
}

// Batching of Cmd.Batch.
const (
	batchRead = 256 << 10
	batchWait = time.Millisecond
)

func (c *Cmd) program() string {
	if c.Program != "" {
		return c.Program
	}
	return filepath.Base(c.Path)
}

// Error is the failure of a child process: what ran, how it ended, and the
// tail of its stderr.
type Error struct {
	Program string // e.g. "pg_dumpall"
	// Err is how it failed: an *exec.ExitError, the error of starting it, or
	// the context's error (with how the child ended in its message) when its
	// context stopped it.
	Err    error
	Stderr string // the last TailSize bytes of its stderr, trimmed
}

// Error returns "PROGRAM: ERR: STDERR" (without ": STDERR" when it is empty).
func (e *Error) Error() string {
	s := e.Program + ": " + e.Err.Error()
	if e.Stderr != "" {
		s += ": " + e.Stderr
	}
	return s
}

// Unwrap returns Err.
func (e *Error) Unwrap() error { return e.Err }

// fail turns how a child ended into an *Error, nil when it succeeded. When
// ctx (the caller's) is done, the error wraps ctx's error.
func (c *Cmd) fail(ctx context.Context, err error, t *tail) error {
	if err == nil {
		return nil
	}
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		err = fmt.Errorf("%w (%v)", cerr, err)
	}
	return &Error{Program: c.program(), Err: err, Stderr: t.String()}
}

// stoppedBySignal reports whether a child ended from SIGTERM or SIGKILL (a
// stop) or SIGPIPE (its reader went away).
func stoppedBySignal(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() {
		return false
	}
	switch ws.Signal() {
	case syscall.SIGTERM, syscall.SIGKILL, syscall.SIGPIPE:
		return true
	}
	return false
}

// command builds the child on a context of its own under ctx, set to stop the
// one way: cancel (or ctx's end) sends SIGTERM, and exec sends SIGKILL after
// grace. Its stderr goes to the returned tail (and c.Stderr).
func (c *Cmd) command(ctx context.Context) (*exec.Cmd, *tail, context.Context, context.CancelFunc) {
	cctx, cancel := context.WithCancel(ctx)
	cmd := exec.CommandContext(cctx, c.Path, c.Args...)
	cmd.Env, cmd.Dir, cmd.SysProcAttr = c.Env, c.Dir, c.SysProcAttr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = grace
	t := &tail{log: c.Logger, program: c.program()}
	cmd.Stderr = t
	if c.Stderr != nil {
		cmd.Stderr = io.MultiWriter(t, c.Stderr)
	}
	return cmd, t, cctx, cancel
}

// Output runs the child to its end with stdin (nil: none) and returns its
// stdout. A failure is an *Error with the tail of its stderr.
func (c *Cmd) Output(ctx context.Context, stdin io.Reader) ([]byte, error) {
	cmd, t, _, cancel := c.command(ctx)
	defer cancel()
	var out bytes.Buffer
	cmd.Stdin, cmd.Stdout = stdin, &out
	if err := cmd.Run(); err != nil {
		return out.Bytes(), c.fail(ctx, err, t)
	}
	return out.Bytes(), nil
}

// CombinedOutput runs the child to its end and returns its stdout and stderr
// together, for tools that report on either; the tail of an *Error holds
// both.
func (c *Cmd) CombinedOutput(ctx context.Context) ([]byte, error) {
	cmd, t, _, cancel := c.command(ctx)
	defer cancel()
	both := &combined{t: t, extra: c.Stderr}
	cmd.Stdout, cmd.Stderr = both, both // one writer: exec copies both with one goroutine
	if err := cmd.Run(); err != nil {
		return both.b.Bytes(), c.fail(ctx, err, t)
	}
	return both.b.Bytes(), nil
}

// combined is the stdout and stderr of CombinedOutput.
type combined struct {
	b     bytes.Buffer
	t     *tail
	extra io.Writer
}

func (w *combined) Write(p []byte) (int, error) {
	w.b.Write(p)
	_, _ = w.t.Write(p)
	if w.extra != nil {
		_, _ = w.extra.Write(p)
	}
	return len(p), nil
}

// tail keeps the last TailSize bytes written to it (a child's stderr) and
// logs them line by line at debug level.
type tail struct {
	mu      sync.Mutex
	b       []byte
	log     *slog.Logger
	program string
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > TailSize {
		t.b = append(t.b[:0], t.b[len(t.b)-TailSize:]...)
	}
	if t.log != nil {
		for line := range strings.SplitSeq(strings.TrimRight(string(p), "\n"), "\n") {
			if line != "" {
				t.log.Debug("stderr", "program", t.program, "line", line)
			}
		}
	}
	return len(p), nil
}

// String returns the kept bytes, trimmed.
func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.b))
}
