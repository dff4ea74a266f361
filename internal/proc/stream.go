package proc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// child is a started child process with one pipe whose other end this
// process holds. A goroutine reaps it as soon as it exits, so it never
// lingers as a zombie.
type child struct {
	c      *Cmd
	ctx    context.Context // the caller's
	tail   *tail
	proc   *os.Process
	cancel context.CancelFunc
	pipe   *os.File // this process's end

	exited  chan struct{} // closed once the child is reaped
	waitErr error         // what Wait returned, set before exited closes
	once    sync.Once
	err     error // the child's result as an error, from result
}

// start starts the child with a pipe as its stdin (input) or its stdout
// (else; stdout is then unused): the child's stdout goes to stdout, or with
// its stderr into the tail when stdout is nil.
func (c *Cmd) start(ctx context.Context, input bool, stdout io.Writer) (*child, error) {
	cmd, t, cctx, cancel := c.command(ctx)
	pr, pw, err := os.Pipe()
	if err != nil {
		cancel()
		return nil, &Error{Program: c.program(), Err: err}
	}
	setPipeSize(pw, PipeSize)
	ours, theirs := pr, pw
	if input {
		ours, theirs = pw, pr
		cmd.Stdin, cmd.Stdout = pr, stdout
		if stdout == nil {
			cmd.Stdout = cmd.Stderr // the same writer: exec copies both with one goroutine
		}
	} else {
		cmd.Stdout = pw
	}
	err = cmd.Start()
	theirs.Close() // the child holds its copy
	if err != nil {
		ours.Close()
		cancel()
		return nil, c.fail(ctx, err, t)
	}
	ch := &child{c: c, ctx: ctx, tail: t, proc: cmd.Process, cancel: cancel, pipe: ours, exited: make(chan struct{})}
	go func() {
		ch.waitErr = cmd.Wait()
		close(ch.exited)
	}()
	// When the child is stopped, close our end, so that no read or write
	// waits on a grandchild that inherited the other end: a reader's at once
	// (a writing grandchild then gets EPIPE), a writer's once the child is
	// gone (before, it could take the end of its input for a whole one).
	context.AfterFunc(cctx, func() {
		if input {
			<-ch.exited
		}
		ch.pipe.Close()
	})
	return ch, nil
}

// result waits for the child and returns its failure as an *Error.
func (ch *child) result() error {
	<-ch.exited
	ch.once.Do(func() { ch.err = ch.c.fail(ch.ctx, ch.waitErr, ch.tail) })
	return ch.err
}

// stop stops the child if it still runs (SIGTERM, then SIGKILL after
// Grace), closes our end of the pipe and reaps it. It returns nil when the
// child ended from the stop (its signal, SIGPIPE as its reader went away, or
// an exit after the signal), and its failure when it had failed on its own.
func (ch *child) stop() error {
	select {
	case <-ch.exited:
	default:
		// Signal first: a child that saw its input end before the signal
		// could take a truncated input for a whole one.
		_ = ch.proc.Signal(syscall.SIGTERM)
	}
	ch.cancel() // SIGKILL after Grace if it is still there
	ch.pipe.Close()
	err := ch.result()
	// exec reports a child that exited 0 after the signal by the context's
	// error.
	if stoppedBySignal(ch.waitErr) || errors.Is(ch.waitErr, context.Canceled) || errors.Is(ch.waitErr, context.DeadlineExceeded) {
		return nil
	}
	return err
}

// Reader is a stream of a child's stdout; Cmd.Reader starts it.
type Reader struct {
	ch    *child
	batch bool
	short bool // the last read was short: wait before the next (Cmd.Batch)
	ended atomic.Bool
}

// Reader starts the child with its stdout as the returned stream. Read
// returns the child's *Error instead of io.EOF when the child fails, and
// io.EOF only after it exited with status 0. The caller must Close the
// stream.
func (c *Cmd) Reader(ctx context.Context) (*Reader, error) {
	ch, err := c.start(ctx, false, nil)
	if err != nil {
		return nil, err
	}
	return &Reader{ch: ch, batch: c.Batch}, nil
}

// Read reads the child's stdout. At its end, it waits for the child and
// returns io.EOF when the child succeeded, else its *Error.
func (r *Reader) Read(p []byte) (int, error) {
	if r.batch && r.short {
		time.Sleep(batchWait)
	}
	n, err := r.ch.pipe.Read(p)
	r.short = n < min(len(p), batchRead)
	if err == nil {
		return n, nil
	}
	r.ended.Store(true)
	if res := r.ch.result(); res != nil {
		return n, res
	}
	if err != io.EOF && r.ch.ctx.Err() != nil {
		// The stream was cut because the context ended.
		return n, r.ch.c.fail(r.ch.ctx, err, r.ch.tail)
	}
	return n, err
}

// Close ends the stream and reaps the child. After a Read returned the
// stream's end, it returns the child's result again. Before, it stops the
// child (SIGTERM, then SIGKILL after Grace): the caller gave up on the
// stream, and Close returns nil unless the child had failed on its own.
func (r *Reader) Close() error {
	if r.ended.Load() {
		r.ch.pipe.Close()
		r.ch.cancel()
		return r.ch.result()
	}
	return r.ch.stop()
}

// Writer is a stream into a child's stdin; Cmd.Writer starts it.
type Writer struct {
	ch *child
}

// Writer starts the child with the returned stream as its stdin, and its
// stdout going to stdout (nil: into the stderr tail, for tools that report
// on either). The caller must end the stream with Close or Stop.
func (c *Cmd) Writer(ctx context.Context, stdout io.Writer) (*Writer, error) {
	ch, err := c.start(ctx, true, stdout)
	if err != nil {
		return nil, err
	}
	return &Writer{ch: ch}, nil
}

// Write writes to the child's stdin. When the child has stopped reading, it
// fails with a broken pipe; Close or Stop then say why the child stopped.
func (w *Writer) Write(p []byte) (int, error) { return w.ch.pipe.Write(p) }

// Close ends the child's input, waits for the child and returns its *Error
// when it failed.
func (w *Writer) Close() error {
	cerr := w.ch.pipe.Close()
	err := w.ch.result()
	w.ch.cancel()
	if err != nil {
		return err
	}
	if cerr != nil && !errors.Is(cerr, os.ErrClosed) {
		return fmt.Errorf("close %s's input: %w", w.ch.c.program(), cerr)
	}
	return nil
}

// Stop is Close for a producer that failed: it stops the child first
// (SIGTERM, then SIGKILL after Grace), so that the child never takes the
// truncated input for a whole one, then ends its input and reaps it. It
// returns nil when the stop ended the child, and its *Error when the child
// had failed on its own.
func (w *Writer) Stop() error { return w.ch.stop() }

// Stderr returns the tail of the child's stderr (and stdout, when Writer was
// given none) so far.
func (w *Writer) Stderr() string { return w.ch.tail.String() }
