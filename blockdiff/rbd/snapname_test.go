//go:build ceph

package rbd

import "testing"

func TestOwnSnapshot(t *testing.T) {
	for _, tc := range []struct {
		prefix, name string
		want         bool
	}{
		{"b-", "b-20260102T030405Z", true},
		{"b-", "b-20260102T030405Z-1", true},
		{"b-", "b-20260102T030405Z-42", true},
		{"b-", "b-meta-20260102T030405Z", false}, // another repository's prefix
		{"b-meta-", "b-meta-20260102T030405Z", true},
		{"b-meta-", "b-20260102T030405Z", false},
		{"b-", "b-20260102T030405Z-", false},
		{"b-", "b-20260102T030405Z-x", false},
		{"b-", "b-20260102T030405Zx", false},
		{"b-", "b-manual", false},
		{"b-", "b-20261302T030405Z", false}, // month 13
		{"b-", "c-20260102T030405Z", false},
	} {
		if got := ownSnapshot(tc.prefix, tc.name); got != tc.want {
			t.Errorf("ownSnapshot(%q, %q) = %v, want %v", tc.prefix, tc.name, got, tc.want)
		}
	}
	for _, p := range []string{"", "a/b", "a@b", "a b", "x\n"} {
		if CheckSnapshotPrefix(p) == nil {
			t.Errorf("CheckSnapshotPrefix(%q): no error", p)
		}
	}
	if err := CheckSnapshotPrefix("b-meta-"); err != nil {
		t.Error(err)
	}
}
