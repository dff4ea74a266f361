package proc_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/proc"
)

func sh(script string) *proc.Cmd {
	return &proc.Cmd{Path: "sh", Args: []string{"-c", script}, Program: "child"}
}

// reaped reports whether pid is gone (not even a zombie of ours).
func reaped(pid int) bool {
	return syscall.Kill(pid, 0) == syscall.ESRCH
}

func TestReaderOK(t *testing.T) {
	for _, batch := range []bool{false, true} {
		c := sh("head -c 3000000 /dev/zero")
		c.Batch = batch
		r, err := c.Reader(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, r)
		if err != nil || n != 3000000 {
			t.Fatalf("batch %v: read %d bytes, %v", batch, n, err)
		}
		if err := r.Close(); err != nil {
			t.Fatalf("Close = %v", err)
		}
		if !reaped(r.Pid()) {
			t.Error("child not reaped")
		}
	}
}

// A child that fails mid-stream never looks like a clean end: the reader
// gets its failure, with its stderr, instead of io.EOF.
func TestReaderFailure(t *testing.T) {
	for _, tc := range []struct{ script, status string }{
		{"head -c 200000 /dev/zero; echo 'pg_dump: error: boom' >&2; exit 3", "exit status 3"},
		{"head -c 200000 /dev/zero; echo 'pg_dump: error: boom' >&2; kill -9 $$", "signal: killed"},
	} {
		r, err := sh(tc.script).Reader(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(r)
		var pe *proc.Error
		if len(b) != 200000 || !errors.As(err, &pe) || pe.Program != "child" || pe.Stderr != "pg_dump: error: boom" ||
			!strings.Contains(err.Error(), tc.status) {
			t.Fatalf("%s: read %d bytes, err %v", tc.script, len(b), err)
		}
		if want := "child: " + tc.status + ": pg_dump: error: boom"; err.Error() != want {
			t.Errorf("Error() = %q, want %q", err, want)
		}
		if _, err := r.Read(make([]byte, 10)); !errors.As(err, &pe) {
			t.Errorf("Read after the end = %v", err)
		}
		if err := r.Close(); !errors.As(err, &pe) {
			t.Errorf("Close = %v, want the failure again", err)
		}
	}
}

// Only the last TailSize bytes of stderr are kept.
func TestStderrTail(t *testing.T) {
	_, err := sh("i=0; while [ $i -lt 3000 ]; do echo \"line $i of a long complaint\" >&2; i=$((i+1)); done; exit 1").Output(t.Context(), nil)
	var pe *proc.Error
	if !errors.As(err, &pe) {
		t.Fatalf("err = %v", err)
	}
	if len(pe.Stderr) > proc.TailSize || !strings.HasSuffix(pe.Stderr, "line 2999 of a long complaint") {
		t.Fatalf("tail of %d bytes ends %q", len(pe.Stderr), pe.Stderr[max(0, len(pe.Stderr)-40):])
	}
}

// Closing early stops the child, reaps it, and is no error.
func TestReaderCloseEarly(t *testing.T) {
	defer proc.SetGrace(time.Minute)()
	for _, script := range []string{
		"exec head -c 1000000000 /dev/zero", // dies of SIGPIPE or SIGTERM
		"trap 'exit 0' TERM; while :; do echo y; sleep 0.01; done",
	} {
		r, err := sh(script).Reader(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		r.Read(make([]byte, 100))
		start := time.Now()
		if err := r.Close(); err != nil {
			t.Errorf("%s: Close = %v", script, err)
		}
		if d := time.Since(start); d > 10*time.Second || !reaped(r.Pid()) {
			t.Errorf("%s: Close took %s, reaped %v", script, d, reaped(r.Pid()))
		}
	}
	// A child that had failed on its own says so.
	r, err := sh("echo broken >&2; exit 5").Reader(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if err := r.Close(); err == nil || !strings.Contains(err.Error(), "exit status 5: broken") {
		t.Errorf("Close of a failed child = %v", err)
	}
}

// Cancelling the context stops the child: SIGTERM, then SIGKILL after the
// grace for a child that ignores SIGTERM; the stream is cut at once, the
// reader gets the context's error once the child is reaped, nothing hangs.
func TestReaderCancel(t *testing.T) {
	defer proc.SetGrace(300 * time.Millisecond)()
	for _, tc := range []struct {
		script string
		slow   bool // ignores SIGTERM
	}{
		{"while :; do echo y; sleep 0.01; done", false},
		{"trap '' TERM; while :; do echo y; sleep 0.01; done", false}, // dies of SIGPIPE
		{"trap '' TERM; echo y; while :; do sleep 0.01; done", true},
		{"echo y; exec sleep 5", false},
		// A grandchild holds stdout after the child is gone.
		{"(sleep 5 2>/dev/null) & echo y", false},
	} {
		ctx, cancel := context.WithCancel(t.Context())
		r, err := sh(tc.script).Reader(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Read(make([]byte, 1)); err != nil {
			t.Fatalf("%s: first read: %v", tc.script, err)
		}
		start := time.Now()
		cancel()
		_, err = io.Copy(io.Discard, r)
		d := time.Since(start)
		var pe *proc.Error
		if !errors.Is(err, context.Canceled) || !errors.As(err, &pe) {
			t.Errorf("%s: err = %v, want context.Canceled in a *proc.Error", tc.script, err)
		}
		if d > 3*time.Second || (tc.slow && d < 250*time.Millisecond) {
			t.Errorf("%s: the stream ended %s after the cancel", tc.script, d)
		}
		r.Close()
		if !reaped(r.Pid()) {
			t.Errorf("%s: child not reaped", tc.script)
		}
	}
}

func TestWriter(t *testing.T) {
	var out bytes.Buffer
	w, err := sh("wc -c").Writer(t.Context(), &out)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("x"), 3<<20)
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out.String()) != strconv.Itoa(len(data)) {
		t.Fatalf("the child read %q bytes", out.String())
	}

	// A child that stops reading and fails: writes break, Close says why,
	// with stdout and stderr in the tail when no stdout was given.
	w, err = sh("head -c 10 >/dev/null; echo 'cannot receive: refused'; exit 4").Writer(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, werr := io.Copy(w, bytes.NewReader(data))
	err = w.Close()
	var pe *proc.Error
	if werr == nil || !errors.As(err, &pe) || pe.Stderr != "cannot receive: refused" || !strings.Contains(err.Error(), "exit status 4") {
		t.Fatalf("write err %v, Close = %v", werr, err)
	}
	if w.Stderr() != "cannot receive: refused" {
		t.Errorf("Stderr() = %q", w.Stderr())
	}
}

// Stop ends a child before its input ends: it never sees a clean EOF.
func TestWriterStop(t *testing.T) {
	defer proc.SetGrace(300 * time.Millisecond)()
	// The child would exit 0 at EOF: Stop must kill it first.
	w, err := sh("cat >/dev/null; echo 'committed' >&2").Writer(t.Context(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("BEGIN; INSERT"))
	if err := w.Stop(); err != nil {
		t.Fatalf("Stop = %v", err)
	}
	if strings.Contains(w.Stderr(), "committed") {
		t.Fatal("the child saw its input end before it was stopped")
	}
	// A child that ignores SIGTERM gets SIGKILL.
	w, err = sh("trap '' TERM; cat >/dev/null; sleep 5").Writer(t.Context(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := w.Stop(); err != nil || time.Since(start) > 3*time.Second {
		t.Fatalf("Stop = %v after %s", err, time.Since(start))
	}
	// A child that had failed on its own says so.
	w, err = sh("echo 'no such database' >&2; exit 2").Writer(t.Context(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if err := w.Stop(); err == nil || !strings.Contains(err.Error(), "no such database") {
		t.Fatalf("Stop of a failed child = %v", err)
	}
}

func TestOutput(t *testing.T) {
	out, err := sh("echo out; echo err >&2").Output(t.Context(), strings.NewReader("in"))
	if err != nil || string(out) != "out\n" {
		t.Fatalf("%q, %v", out, err)
	}
	out, err = sh("cat").Output(t.Context(), strings.NewReader("in"))
	if err != nil || string(out) != "in" {
		t.Fatalf("stdin: %q, %v", out, err)
	}
	out, err = sh("echo out; echo err >&2; exit 1").CombinedOutput(t.Context())
	var pe *proc.Error
	if string(out) != "out\nerr\n" || !errors.As(err, &pe) || pe.Stderr != "out\nerr" {
		t.Fatalf("combined: %q, %v", out, err)
	}
	// A program that is not there.
	_, err = (&proc.Cmd{Path: "cairn-no-such-program"}).Output(t.Context(), nil)
	if !errors.As(err, &pe) || !errors.Is(err, exec.ErrNotFound) || pe.Program != "cairn-no-such-program" {
		t.Errorf("missing program: %v", err)
	}
	_, err = (&proc.Cmd{Path: "/nonexistent/pg_dumpall"}).Reader(t.Context())
	if !errors.As(err, &pe) || !errors.Is(err, os.ErrNotExist) || pe.Program != "pg_dumpall" {
		t.Errorf("missing path: %v", err)
	}
	// A cancelled context: the error says so.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := sh("true").Output(ctx, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

// Cmd's environment, directory, extra stderr writer and logger.
func TestCmdOptions(t *testing.T) {
	var logged, extra bytes.Buffer
	dir := t.TempDir()
	c := sh(`echo "$CAIRN_X $(pwd)"; echo warn1 >&2; echo warn2 >&2`)
	c.Env = []string{"CAIRN_X=hello", "PATH=" + os.Getenv("PATH")}
	c.Dir = dir
	c.Stderr = &extra
	c.Logger = slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug}))
	out, err := c.Output(t.Context(), nil)
	if err != nil || strings.TrimSpace(string(out)) != "hello "+dir {
		t.Fatalf("%q, %v", out, err)
	}
	if extra.String() != "warn1\nwarn2\n" || !strings.Contains(logged.String(), "program=child line=warn2") {
		t.Errorf("stderr copy %q, log %q", extra.String(), logged.String())
	}
}
