//go:build !ceph

package main

import (
	"strings"
	"testing"
)

// TestNoCeph: without the ceph tag the Ceph commands say how to rebuild.
func TestNoCeph(t *testing.T) {
	c := newCLI(t)
	c.ok("init")
	for _, args := range [][]string{
		{"backup-all", "--pool", "rbd"},
		{"backup", "rbd://rbd/img", "vol"},
		{"restore", "v", "rbd://rbd/img"},
	} {
		code, _, errs := c.run("", args...)
		if code != 1 || !strings.Contains(errs, "rebuild with -tags 'ceph pacific'") {
			t.Errorf("%v: exit %d, %s", args, code, errs)
		}
	}
	// a rados:// repository names the missing build tags, not an "unknown scheme"
	code, _, errs := c.run("", "--repo", "rados://rbd/repo", "ls")
	if code != 1 || !strings.Contains(errs, "rados:// repositories: built without Ceph support: rebuild with -tags 'ceph pacific'") {
		t.Errorf("rados:// without Ceph: exit %d, %s", code, errs)
	}
}
