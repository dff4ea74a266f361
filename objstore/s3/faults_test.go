package s3_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/faultproxy"
	"github.com/cairn-backup/cairn/internal/testenv"
	"github.com/cairn-backup/cairn/objstore"
	"github.com/cairn-backup/cairn/objstore/storetest"
)

func startProxy(t *testing.T, target string, cfg faultproxy.Config) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.New(target, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		faults, clean := p.Counts()
		t.Logf("fault proxy: %d clean requests, faults %v", clean, faults)
		p.Close()
	})
	return p
}

// TestFaultsTenPercent runs the whole conformance suite through a proxy that
// gives one request in ten a fault of every kind: every operation must still
// succeed, by the SDK's retries, Get's resuming bodies and Create's and
// Complete's recognition of their own lost successes.
func TestFaultsTenPercent(t *testing.T) {
	env := testenv.S3(t)
	if testing.Short() {
		t.Skip("slow; skipped in -short")
	}
	p := startProxy(t, env.Endpoint, faultproxy.Config{Rate: 0.10, SlowDelay: 300 * time.Millisecond})
	storetest.Run(t, newStores(env, p.URL, faultyBucket(t, env)))
	if faults, _ := p.Counts(); len(faults) < len(faultproxy.AllFaults) {
		t.Errorf("not every kind of fault was injected: %v", faults)
	}
}

// op is one store operation for the all-faults tests.
type op struct {
	name, key string
	run       func(ctx context.Context, s objstore.Store) error
}

func ops() []op {
	big := bytes.Repeat([]byte("b"), 11<<20)
	return []op{
		{"put", "small", func(ctx context.Context, s objstore.Store) error {
			return s.Put(ctx, "small", strings.NewReader("x"), 1)
		}},
		{"put", "big", func(ctx context.Context, s objstore.Store) error {
			return s.Put(ctx, "big", bytes.NewReader(big), int64(len(big)))
		}},
		{"create", "lock", func(ctx context.Context, s objstore.Store) error {
			return s.Create(ctx, "lock", strings.NewReader("x"), 1)
		}},
		{"get", "present", func(ctx context.Context, s objstore.Store) error {
			rc, err := s.Get(ctx, "present", 0, -1)
			if err == nil {
				_, err = io.ReadAll(rc)
				rc.Close()
			}
			return err
		}},
		{"stat", "present", func(ctx context.Context, s objstore.Store) error {
			_, err := s.Stat(ctx, "present")
			return err
		}},
		{"delete", "present", func(ctx context.Context, s objstore.Store) error {
			return s.Delete(ctx, "present")
		}},
		{"list", "pre/", func(ctx context.Context, s objstore.Store) error {
			for _, err := range s.List(ctx, "pre/") {
				if err != nil {
					return err
				}
			}
			return nil
		}},
	}
}

// checkFailures runs every op, in parallel, with the proxy failing every
// request, and checks that each fails within bound with an error naming the
// operation, the key and the cause.
func checkFailures(t *testing.T, s objstore.Store, timeout, bound time.Duration, cause ...string) {
	for _, o := range ops() {
		t.Run(o.name+"-"+o.key, func(t *testing.T) {
			t.Parallel()
			t0 := time.Now()
			ctx, cancel := context.WithTimeout(t.Context(), timeout)
			err := o.run(ctx, s)
			cancel()
			took := time.Since(t0)
			if err == nil {
				t.Fatalf("%s %q succeeded through a proxy that fails every request", o.name, o.key)
			}
			var oe *objstore.OpError
			if !errors.As(err, &oe) || oe.Op != o.name || oe.Key != o.key {
				t.Errorf("%s %q: error %q is no OpError naming the operation and key", o.name, o.key, err)
			}
			msg := err.Error()
			if !strings.Contains(msg, o.name+" ") || !strings.Contains(msg, `"`+o.key+`"`) {
				t.Errorf("%s %q: the message %q does not name the operation and key", o.name, o.key, msg)
			}
			if !containsAny(msg, cause) {
				t.Errorf("%s %q: the message %q names no cause among %q", o.name, o.key, msg, cause)
			}
			if took > bound {
				t.Errorf("%s %q took %v to fail, more than %v", o.name, o.key, took, bound)
			}
			t.Logf("failed after %v: %v", took.Round(time.Millisecond), err)
		})
	}
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// openThrough opens a store through the proxy p, puts the objects the ops
// read, and only then lets p fail requests with cfg.
func openThrough(t *testing.T, env testenv.S3Env, p *faultproxy.Proxy, cfg faultproxy.Config, extra ...string) objstore.Store {
	t.Helper()
	p.Set(faultproxy.Config{})
	s, err := objstore.Open(t.Context(), storeURL(env, p.URL, faultyBucket(t, env), "faults", extra...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for _, k := range []string{"present", "pre/a"} {
		if err := s.Put(t.Context(), k, strings.NewReader("v"), 1); err != nil {
			t.Fatal(err)
		}
	}
	p.Set(cfg)
	return s
}

// TestFaultsAll: with every request failing (error responses and dropped
// connections), each operation gives up after its retries, well within a
// minute, with an error that names the operation, the key and the cause.
func TestFaultsAll(t *testing.T) {
	env := testenv.S3(t)
	p := startProxy(t, env.Endpoint, faultproxy.Config{})
	s := openThrough(t, env, p, faultproxy.Config{Rate: 1, Faults: []faultproxy.Fault{faultproxy.Error5xx, faultproxy.Drop}})
	checkFailures(t, s, time.Hour, time.Minute, "StatusCode: 50", "EOF", "connection reset", "exceeded maximum number of attempts")
}

// TestFaultsHang: a server that accepts requests and never answers makes
// each operation fail by read_timeout and the retry limit, and a context
// deadline cuts that short.
func TestFaultsHang(t *testing.T) {
	env := testenv.S3(t)
	p := startProxy(t, env.Endpoint, faultproxy.Config{})
	hang := faultproxy.Config{Rate: 1, Faults: []faultproxy.Fault{faultproxy.Slow}, SlowDelay: time.Hour}
	s := openThrough(t, env, p, hang, "read_timeout", "500ms", "max_attempts", "3")
	t.Run("read_timeout", func(t *testing.T) {
		checkFailures(t, s, time.Hour, time.Minute, "timeout", "deadline")
	})
	t.Run("context", func(t *testing.T) {
		s := openThrough(t, env, p, hang) // default read_timeout: a minute
		checkFailures(t, s, 2*time.Second, time.Minute, "context deadline exceeded")
	})
}

// TestFaultsMultipartAbort: when a part cannot be uploaded, Put stops
// reading its source, aborts the multipart upload (nothing is left behind)
// and names the failed part.
func TestFaultsMultipartAbort(t *testing.T) {
	env := testenv.S3(t)
	p := startProxy(t, env.Endpoint, faultproxy.Config{})
	b := bucket(t, env) // strict: an upload left behind fails the test
	s, err := objstore.Open(t.Context(), storeURL(env, p.URL, b, "abort", "max_attempts", "2", "concurrency", "2"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p.Set(faultproxy.Config{Rate: 1, Faults: []faultproxy.Fault{faultproxy.Error5xx},
		Match: func(r *http.Request) bool { return r.URL.Query().Has("partNumber") }})
	src := &zeros{n: 1 << 30}
	err = s.Put(t.Context(), "stream", src, -1)
	if err == nil {
		t.Fatal("Put succeeded though every UploadPart fails")
	}
	if !strings.Contains(err.Error(), `put "stream"`) || !strings.Contains(err.Error(), "UploadPart") {
		t.Errorf("error %q does not name the operation, key and failed step", err)
	}
	if read := 1<<30 - src.n; read > 64<<20 {
		t.Errorf("Put read %d MiB of its source after the first part failed", read>>20)
	}
	t.Logf("%v", err)
	if _, err := s.Stat(t.Context(), "stream"); !errors.Is(err, objstore.ErrNotExist) {
		t.Errorf("Stat after the failed Put = %v, want ErrNotExist", err)
	}
}

// once matches the first request that match accepts, and no other.
func once(match func(*http.Request) bool) func(*http.Request) bool {
	var done atomic.Bool
	return func(r *http.Request) bool { return match(r) && !done.Swap(true) }
}

// TestFaultsLostSuccess: when the server acted on a request but the response
// was lost, the retry meets the request's own effect. A Create must not then
// report ErrExist for the object it wrote, nor a multipart Put fail because
// its upload was already completed.
func TestFaultsLostSuccess(t *testing.T) {
	env := testenv.S3(t)
	p := startProxy(t, env.Endpoint, faultproxy.Config{})
	s := openThrough(t, env, p, faultproxy.Config{})
	ctx := t.Context()
	// Let the probe through first.
	if err := s.Create(ctx, "warm-up", strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}

	lost := faultproxy.Config{Rate: 1, Faults: []faultproxy.Fault{faultproxy.LostResponse}}
	lost.Match = once(func(r *http.Request) bool { return r.Method == http.MethodPut && r.Header.Get("If-None-Match") == "*" })
	p.Set(lost)
	if err := s.Create(ctx, "lock", strings.NewReader("mine"), 4); err != nil {
		t.Fatalf("Create whose first response was lost = %v, want success", err)
	}
	if err := s.Create(ctx, "lock", strings.NewReader("again"), 5); !errors.Is(err, objstore.ErrExist) {
		t.Fatalf("a second Create = %v, want ErrExist", err)
	}

	lost.Match = once(func(r *http.Request) bool { return r.Method == http.MethodPost && r.URL.Query().Has("uploadId") })
	p.Set(lost)
	big := bytes.Repeat([]byte("m"), 11<<20)
	if err := s.Put(ctx, "big", bytes.NewReader(big), int64(len(big))); err != nil {
		t.Fatalf("multipart Put whose CompleteMultipartUpload response was lost = %v, want success", err)
	}
	if info, err := s.Stat(ctx, "big"); err != nil || info.Size != int64(len(big)) {
		t.Fatalf("Stat(big) = %+v, %v", info, err)
	}
	if faults, _ := p.Counts(); faults[faultproxy.LostResponse] != 2 {
		t.Fatalf("lost responses injected: %v, want 2", faults)
	}
}

// TestFaultsInMemoryPut retries a single-part Put of the caller's own
// bytes.Reader, which the backend sends without copying it (objstore.InMemory),
// after the first attempt's connection drops: the SDK must seek back to where
// the reader stood, so the object holds exactly its unread bytes.
func TestFaultsInMemoryPut(t *testing.T) {
	env := testenv.S3(t)
	p := startProxy(t, env.Endpoint, faultproxy.Config{})
	s := openThrough(t, env, p, faultproxy.Config{})
	ctx := t.Context()
	body := make([]byte, 3<<20)
	_, _ = rand.Read(body)
	r := bytes.NewReader(body)
	if _, err := r.Seek(1000, io.SeekStart); err != nil { // a reader partly read already
		t.Fatal(err)
	}
	for _, fault := range []faultproxy.Fault{faultproxy.Drop, faultproxy.Error5xx} {
		cfg := faultproxy.Config{Rate: 1, Faults: []faultproxy.Fault{fault}}
		cfg.Match = once(func(r *http.Request) bool { return r.Method == http.MethodPut })
		p.Set(cfg)
		if _, err := r.Seek(1000, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		if err := s.Put(ctx, "in-memory", r, int64(len(body)-1000)); err != nil {
			t.Fatalf("Put after a %v = %v, want success on the retry", fault, err)
		}
		rc, err := s.Get(ctx, "in-memory", 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, body[1000:]) {
			t.Fatalf("after a %v the object holds %d bytes, not the reader's %d unread ones", fault, len(got), len(body)-1000)
		}
	}
	if faults, _ := p.Counts(); faults[faultproxy.Drop] != 1 || faults[faultproxy.Error5xx] != 1 {
		t.Fatalf("faults injected: %v, want one drop and one 5xx", faults)
	}
}
