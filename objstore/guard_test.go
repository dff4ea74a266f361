package objstore_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"iter"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/objstore"
)

// bare is a backend with no checks of its own: it records calls and fails
// with plain errors.
type bare struct {
	calls  []string
	closes int
	read   []byte
}

func (b *bare) Put(_ context.Context, key string, r io.Reader, _ int64) error {
	b.calls = append(b.calls, "put "+key)
	var err error
	b.read, err = io.ReadAll(r)
	return err
}

func (b *bare) Create(_ context.Context, key string, _ io.Reader, _ int64) error {
	b.calls = append(b.calls, "create "+key)
	return errors.New("disk on fire")
}

func (b *bare) Get(_ context.Context, key string, _, _ int64) (io.ReadCloser, error) {
	b.calls = append(b.calls, "get "+key)
	return nil, &objstore.OpError{Backend: "bare", Op: "get", Key: key, Err: objstore.ErrNotExist}
}

func (b *bare) Stat(_ context.Context, key string) (objstore.ObjectInfo, error) {
	b.calls = append(b.calls, "stat "+key)
	return objstore.ObjectInfo{Key: key}, nil
}

func (b *bare) Delete(_ context.Context, key string) error {
	b.calls = append(b.calls, "delete "+key)
	return nil
}

func (b *bare) List(_ context.Context, prefix string) iter.Seq2[objstore.ObjectInfo, error] {
	b.calls = append(b.calls, "list "+prefix)
	return func(yield func(objstore.ObjectInfo, error) bool) {
		if yield(objstore.ObjectInfo{Key: prefix + "a"}, nil) {
			yield(objstore.ObjectInfo{}, errors.New("listing broke"))
		}
	}
}

func (b *bare) Close() error { b.closes++; return nil }

func TestGuard(t *testing.T) {
	ctx := t.Context()
	b := &bare{}
	s := objstore.Guard("bare", b, nil)

	// Plain errors of the backend are wrapped; OpErrors pass as they are.
	err := s.Create(ctx, "k", strings.NewReader("x"), 1)
	if err == nil || err.Error() != `objstore bare: create "k": disk on fire` {
		t.Errorf("Create = %v", err)
	}
	if _, err := s.Get(ctx, "k", 0, -1); !errors.Is(err, objstore.ErrNotExist) || err.Error() != `objstore bare: get "k": object does not exist` {
		t.Errorf("Get = %v", err)
	}
	var got []string
	var listErr error
	for info, err := range s.List(ctx, "p/") {
		if err != nil {
			listErr = err
			break
		}
		got = append(got, info.Key)
	}
	if len(got) != 1 || got[0] != "p/a" || listErr == nil || listErr.Error() != `objstore bare: list "p/": listing broke` {
		t.Errorf("List = %v, %v", got, listErr)
	}

	// Refused before the backend sees them.
	b.calls = nil
	if _, err := s.Get(ctx, "k", -1, 1); err == nil || err.Error() != `objstore bare: get "k": negative offset -1` {
		t.Errorf("negative offset: %v", err)
	}
	for _, key := range []string{"", "/a", "a//b", "a/../b", "a\x00"} {
		if err := s.Delete(ctx, key); !errors.Is(err, objstore.ErrInvalidKey) {
			t.Errorf("Delete(%q) = %v, want ErrInvalidKey", key, err)
		}
	}
	for range s.List(ctx, "a\nb") {
		t.Error("List of a prefix with a control character yielded")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Stat(cctx, "k"); !errors.Is(err, context.Canceled) {
		t.Errorf("Stat with a cancelled context = %v", err)
	}
	if len(b.calls) != 0 {
		t.Errorf("the backend saw %v", b.calls)
	}

	// The reader of a Put fails once its context is done.
	pctx, pcancel := context.WithCancel(ctx)
	r := io.MultiReader(strings.NewReader("abc"), readerFunc(func([]byte) (int, error) { pcancel(); return 0, nil }), strings.NewReader("def"))
	if err := s.Put(pctx, "k", r, 6); !errors.Is(err, context.Canceled) {
		t.Errorf("Put cancelled midway = %v (read %q)", err, b.read)
	}

	// A backend's stricter key rule.
	strict := objstore.Guard("strict", &bare{}, func(key string) error {
		if err := objstore.ValidateKey(key); err != nil {
			return err
		}
		if strings.HasPrefix(key, "x") {
			return errors.Join(objstore.ErrInvalidKey, errors.New("no x"))
		}
		return nil
	})
	if err := strict.Put(ctx, "xy", bytes.NewReader(nil), 0); !errors.Is(err, objstore.ErrInvalidKey) {
		t.Errorf("strict Put = %v", err)
	}

	// Closed: every operation fails, Close reaches the backend once.
	b.calls = nil
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil || b.closes != 1 {
		t.Errorf("second Close = %v, backend closed %d times", err, b.closes)
	}
	if err := s.Put(ctx, "k", strings.NewReader(""), 0); err == nil || err.Error() != `objstore bare: put "k": store is closed` {
		t.Errorf("Put after Close = %v", err)
	}
	for _, err := range s.List(ctx, "") {
		if err == nil || err.Error() != `objstore bare: list "": store is closed` {
			t.Errorf("List after Close = %v", err)
		}
	}
	if len(b.calls) != 0 {
		t.Errorf("the backend saw %v after Close", b.calls)
	}
}

// bucketBare has a bucket.
type bucketBare struct {
	bare
	ensured bool
}

func (b *bucketBare) EnsureBucket(context.Context, bool) error { b.ensured = true; return nil }

// Guard keeps the backend's optional methods, and only those.
func TestGuardOptionalMethods(t *testing.T) {
	type ensurer interface {
		EnsureBucket(ctx context.Context, create bool) error
	}
	if _, ok := objstore.Guard("bare", &bare{}, nil).(ensurer); ok {
		t.Error("a guarded store without buckets has EnsureBucket")
	}
	b := &bucketBare{}
	s := objstore.Guard("bucket", b, nil)
	e, ok := s.(ensurer)
	if !ok {
		t.Fatal("a guarded store with buckets lost EnsureBucket")
	}
	if err := e.EnsureBucket(t.Context(), false); err != nil || !b.ensured {
		t.Errorf("EnsureBucket = %v, reached the backend: %v", err, b.ensured)
	}
	s.Close()
	if err := e.EnsureBucket(t.Context(), false); err == nil || !strings.Contains(err.Error(), "store is closed") {
		t.Errorf("EnsureBucket after Close = %v", err)
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// Every backend of the package is guarded: a closed store says so.
func TestClosedStores(t *testing.T) {
	for _, u := range []string{"mem://", "file://" + t.TempDir()} {
		s, err := objstore.Open(t.Context(), u)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		if _, err := s.Stat(t.Context(), "a"); err == nil || !strings.HasSuffix(err.Error(), `stat "a": store is closed`) {
			t.Errorf("%s: Stat after Close = %v", u, err)
		}
	}
}
