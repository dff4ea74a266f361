//go:build ceph

package rbd

import (
	"strconv"
	"strings"
	"time"
)

// ownSnapshot reports whether name is a snapshot that a backup with prefix
// creates: PREFIX<SnapshotTimeFormat timestamp>, with an optional -N suffix.
// Another prefix that starts with this one (b- and b-meta-) never matches, so
// each repository's rotation leaves the others' snapshots alone.
func ownSnapshot(prefix, name string) bool {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok || len(rest) < len(SnapshotTimeFormat) {
		return false
	}
	ts, suffix := rest[:len(SnapshotTimeFormat)], rest[len(SnapshotTimeFormat):]
	if _, err := time.Parse(SnapshotTimeFormat, ts); err != nil {
		return false
	}
	if suffix == "" {
		return true
	}
	n, ok := strings.CutPrefix(suffix, "-")
	if !ok || n == "" || len(n) > 2 {
		return false
	}
	for _, c := range n {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// CheckSnapshotPrefix returns an error when prefix cannot start the names of
// the snapshots a backup creates: empty, or with '/', '@' or a control
// character (Ceph snapshot names cannot hold them in an rbd spec).
func CheckSnapshotPrefix(prefix string) error {
	if prefix == "" || len(prefix) > 64 || strings.ContainsAny(prefix, "/@") ||
		strings.ContainsFunc(prefix, func(c rune) bool { return c < 0x20 || c == 0x7f || c == ' ' }) {
		return &prefixError{prefix}
	}
	return nil
}

type prefixError struct{ prefix string }

func (e *prefixError) Error() string {
	return "rbd: bad snapshot prefix " + strconv.Quote(e.prefix) + ": want 1..64 printable bytes without '/', '@' or spaces"
}
