//go:build ceph

package rados_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/internal/testenv"
	"github.com/cairn-backup/cairn/objstore"
	"github.com/cairn-backup/cairn/objstore/rados"
	"github.com/cairn-backup/cairn/objstore/storetest"
)

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// openStore opens a store under a fresh prefix (and, when ns is set, its own
// namespace) of the test cluster's pool and empties it at the end.
func openStore(t *testing.T, query string) objstore.Store {
	t.Helper()
	env := testenv.Ceph(t)
	url := "rados://" + env.Pool + "/t-" + randHex(6) + "?namespace=cairn-test-" + randHex(4) + query
	s, err := objstore.Open(t.Context(), url)
	if err != nil {
		t.Fatalf("Open %s: %v", url, err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		for info, err := range s.List(ctx, "") {
			if err != nil {
				t.Errorf("cleanup list: %v", err)
				break
			}
			if err := s.Delete(ctx, info.Key); err != nil {
				t.Errorf("cleanup delete %s: %v", info.Key, err)
			}
		}
		s.Close()
	})
	return s
}

// TestConformance runs the objstore suite with the default part size (the
// suite's 12 MiB objects are single write-full operations).
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) objstore.Store { return openStore(t, "") })
}

// TestConformanceParts runs the suite with 1 MiB parts, so that its large
// objects are striped into parts under a manifest head.
func TestConformanceParts(t *testing.T) {
	storetest.Run(t, func(t *testing.T) objstore.Store { return openStore(t, "&part_size=1048576") })
}

// TestPartsReplacedAndDeleted checks that overwriting and deleting a large
// object removes its parts (the parts namespace ends up empty).
func TestPartsReplacedAndDeleted(t *testing.T) {
	s := openStore(t, "&part_size=65536")
	ctx := t.Context()
	big := bytes.Repeat([]byte("0123456789abcdef"), 20000) // 320000 bytes: 5 parts
	for i := range 3 {
		big[0] = byte(i)
		if err := s.Put(ctx, "k", bytes.NewReader(big), -1); err != nil {
			t.Fatal(err)
		}
	}
	rc, err := s.Get(ctx, "k", 65530, 20)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, big[65530:65550]) {
		t.Fatalf("range across parts: %q, %v", got, err)
	}
	if n := rados.CountParts(t, s); n != 5 {
		t.Errorf("after 3 overwrites: %d part objects, want 5", n)
	}
	if err := s.Put(ctx, "k", bytes.NewReader([]byte("small")), 5); err != nil {
		t.Fatal(err)
	}
	if n := rados.CountParts(t, s); n != 0 {
		t.Errorf("after a small overwrite: %d part objects, want 0", n)
	}
	if err := s.Put(ctx, "k", bytes.NewReader(big), int64(len(big))); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if n := rados.CountParts(t, s); n != 0 {
		t.Errorf("after Delete: %d part objects, want 0", n)
	}
}

// TestOpenErrors: a missing pool and an unreachable cluster are named as such.
func TestOpenErrors(t *testing.T) {
	env := testenv.Ceph(t)
	_, err := objstore.Open(t.Context(), "rados://no-such-pool-"+randHex(3)+"/x?conf="+env.Conf)
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing pool: %v", err)
	}
	conf := filepath.Join(t.TempDir(), "ceph.conf")
	if err := os.WriteFile(conf, []byte("[global]\nmon_host = 127.0.0.1:9\nkeyring = /dev/null\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = objstore.Open(t.Context(), "rados://"+env.Pool+"/x?timeout=2s&conf="+conf)
	if err == nil || !strings.Contains(err.Error(), "connecting to the cluster") || !strings.Contains(err.Error(), "127.0.0.1:9") {
		t.Errorf("unreachable cluster: %v", err)
	}
}

// TestListAcrossSegments: keys live in one namespace per first segment; a
// prefix without a slash still finds keys of every segment it matches.
func TestListAcrossSegments(t *testing.T) {
	s := openStore(t, "")
	ctx := t.Context()
	for _, k := range []string{"a/1", "ab/2", "a", "b", "versions/x", "data/00/y"} {
		if err := s.Put(ctx, k, strings.NewReader(k), int64(len(k))); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		prefix string
		want   []string
	}{
		{"", []string{"a", "a/1", "ab/2", "b", "data/00/y", "versions/x"}},
		{"a", []string{"a", "a/1", "ab/2"}},
		{"a/", []string{"a/1"}},
		{"versions/", []string{"versions/x"}},
		{"data/0", []string{"data/00/y"}},
		{"data/1", nil},
	} {
		var got []string
		for info, err := range s.List(ctx, c.prefix) {
			if err != nil {
				t.Fatal(err)
			}
			if info.Size != int64(len(info.Key)) {
				t.Errorf("%s: size %d", info.Key, info.Size)
			}
			got = append(got, info.Key)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("List(%q) = %v, want %v", c.prefix, got, c.want)
		}
	}
}
