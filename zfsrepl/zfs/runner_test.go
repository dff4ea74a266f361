package zfs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeZFS writes a shell script that stands in for zfs: `send` writes
// $FAKE_SIZE bytes of zeros then exits with $FAKE_RC and a message on stderr;
// `receive` copies stdin to $FAKE_OUT; `list` prints $FAKE_LIST.
func fakeZFS(t *testing.T) *Runner {
	t.Helper()
	p := filepath.Join(t.TempDir(), "zfs")
	script := `#!/bin/sh
case "$1" in
send) head -c "$FAKE_SIZE" /dev/zero; echo "send: boom" >&2; exit "$FAKE_RC";;
receive) cat > "$FAKE_OUT"; rc=$?; [ -n "$FAKE_RECV_FAIL" ] && { echo "cannot receive: $FAKE_RECV_FAIL" >&2; exit 1; }; exit $rc;;
list) printf "$FAKE_LIST"; exit 0;;
esac
echo "unexpected $*" >&2; exit 2
`
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return &Runner{Bin: p}
}

func TestSendStreamFailure(t *testing.T) {
	r := fakeZFS(t)
	t.Setenv("FAKE_SIZE", "3000000")
	t.Setenv("FAKE_RC", "1")
	s, err := r.Send(context.Background(), SendArgs{To: "p/a@s"})
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, s)
	var ce *CommandError
	if !errors.As(err, &ce) || !strings.Contains(ce.Stderr, "boom") || n != 3000000 {
		t.Fatalf("read %d bytes, err %v: want the command's failure instead of EOF", n, err)
	}
	if err := s.Close(); !errors.As(err, &ce) {
		t.Fatalf("Close = %v", err)
	}
	if _, err := s.Read(make([]byte, 10)); err == nil {
		t.Fatal("Read after the end succeeded")
	}
}

func TestSendStreamOK(t *testing.T) {
	r := fakeZFS(t)
	t.Setenv("FAKE_SIZE", "5000000")
	t.Setenv("FAKE_RC", "0")
	s, err := r.Send(context.Background(), SendArgs{To: "p/a@s"})
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, s)
	if err != nil || n != 5000000 {
		t.Fatalf("%d %v", n, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Closing early kills the command and is not an error.
	s, _ = r.Send(context.Background(), SendArgs{To: "p/a@s"})
	s.Read(make([]byte, 100))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

type failingReader struct{ n int }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("connection reset")
	}
	k := min(len(p), f.n)
	f.n -= k
	return k, nil
}

func TestReceive(t *testing.T) {
	r := fakeZFS(t)
	out := filepath.Join(t.TempDir(), "out")
	t.Setenv("FAKE_OUT", out)
	data := bytes.Repeat([]byte("x"), 3<<20)
	if err := r.Receive(context.Background(), "p/a", ReceiveArgs{}, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
		t.Fatalf("received %d bytes", len(got))
	}
	// A failing stream: the error names the stream's failure.
	err := r.Receive(context.Background(), "p/a", ReceiveArgs{}, &failingReader{n: 100000})
	if err == nil || !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("got %v", err)
	}
	// zfs receive refusing: the error carries its stderr.
	t.Setenv("FAKE_RECV_FAIL", "destination has snapshots")
	err = r.Receive(context.Background(), "p/a", ReceiveArgs{}, bytes.NewReader(data))
	var ce *CommandError
	if !errors.As(err, &ce) || !strings.Contains(ce.Stderr, "destination has snapshots") {
		t.Fatalf("got %v", err)
	}
	if err := r.Receive(context.Background(), "../x", ReceiveArgs{}, bytes.NewReader(data)); !errors.Is(err, ErrInvalidName) {
		t.Fatalf("bad name: %v", err)
	}
}

func TestListVersionsParse(t *testing.T) {
	r := fakeZFS(t)
	t.Setenv("FAKE_LIST", "p/a@s2\t22\t20\t1700000100\np/a#b1\t11\t10\t1700000000\np/a@s1\t11\t10\t1700000000\n")
	vs, err := r.ListVersions(context.Background(), "p/a")
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 3 || vs[0].FullName() != "p/a@s1" || vs[1].FullName() != "p/a#b1" || vs[2].GUID != 22 || vs[2].Creation.Unix() != 1700000100 {
		t.Fatalf("%+v", vs)
	}
	t.Setenv("FAKE_LIST", "p/a@s2\tx\t20\t1\n")
	if _, err := r.ListVersions(context.Background(), "p/a"); err == nil {
		t.Fatal("bad guid accepted")
	}
}

// A cancelled send stops zfs (the fake's head goes on as a grandchild holding
// the pipe): the reader gets the cancellation as a *CommandError, promptly.
func TestSendStreamCancel(t *testing.T) {
	r := fakeZFS(t)
	t.Setenv("FAKE_SIZE", "100000000000")
	t.Setenv("FAKE_RC", "0")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := r.Send(ctx, SendArgs{To: "p/a@s"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(s, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	cancel()
	done := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, s); done <- err }()
	select {
	case err := <-done:
		var ce *CommandError
		if !errors.As(err, &ce) || !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want a CommandError wrapping context.Canceled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the stream did not end after the cancel")
	}
	s.Close()
}
