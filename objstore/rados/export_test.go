//go:build ceph

package rados

import (
	"testing"

	"github.com/cairn-backup/cairn/objstore"
)

// CountParts returns how many part objects the store's parts namespace holds.
func CountParts(t *testing.T, s objstore.Store) int {
	t.Helper()
	it, err := s.(interface{ Unwrap() objstore.Store }).Unwrap().(*store).parts.Iter()
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	n := 0
	for it.Next() {
		n++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}
