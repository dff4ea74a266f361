//go:build ceph

package rados_test

import (
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/objstore/rados"
)

func TestParseURL(t *testing.T) {
	for _, c := range []struct {
		url, pool, prefix string
		ok                bool
	}{
		{"rados://rbd", "rbd", "", true},
		{"rados://rbd/", "rbd", "", true},
		{"rados://backups/cairn/repo1", "backups", "cairn/repo1/", true},
		{"rados://backups/repo?namespace=x&part_size=1048576&timeout=10s&id=backup&conf=/etc/ceph/c.conf", "backups", "repo/", true},
		{"rados://", "", "", false},
		{"rados:///prefix", "", "", false},
		{"rados://user:secret@pool/x", "", "", false},
		{"rados://pool:6789/x", "", "", false},
		{"rados://pool/a//b", "", "", false},
		{"rados://pool/a/../b", "", "", false},
		{"rados://pool/x?part_size=1", "", "", false},
		{"rados://pool/x?part_size=1G", "", "", false},
		{"rados://pool/x?timeout=-1s", "", "", false},
		{"rados://pool/x?key=AQD...", "", "", false},
		{"s3://bucket/x", "", "", false},
		{"rados:pool", "", "", false},
	} {
		pool, prefix, _, err := rados.ParseURL(c.url)
		if (err == nil) != c.ok || pool != c.pool || prefix != c.prefix {
			t.Errorf("ParseURL(%q) = %q, %q, %v; want %q, %q, ok=%v", c.url, pool, prefix, err, c.pool, c.prefix, c.ok)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("ParseURL(%q): the error shows the password: %v", c.url, err)
		}
	}
}

// FuzzParseURL checks that no input panics and that accepted URLs give a
// pool without control characters and a prefix that is empty or ends in "/".
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{"rados://rbd/x", "rados://p/a/b?namespace=n&part_size=65536", "rados://u:p@h/x",
		"rados://%00/x", "rados://p/%2e%2e", "rados://p/x?timeout=1h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		pool, prefix, _, err := rados.ParseURL(s)
		if err != nil {
			return
		}
		if pool == "" || strings.ContainsAny(pool, "\x00\n") {
			t.Fatalf("ParseURL(%q): pool %q", s, pool)
		}
		if prefix != "" && !strings.HasSuffix(prefix, "/") {
			t.Fatalf("ParseURL(%q): prefix %q", s, prefix)
		}
	})
}
