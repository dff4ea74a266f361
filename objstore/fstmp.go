package objstore

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// TempRemover is implemented by stores that keep temporary files of their
// own next to the objects: the file backend writes each object to a
// ".cairn-tmp-*" file first, and a writer killed mid-way leaves it behind.
// A repository's cleanup calls RemoveTemp with a cutoff older than any write
// that may still be running.
type TempRemover interface {
	// RemoveTemp deletes the store's temporary files last modified before
	// cutoff (in the store's clock) and returns how many it deleted.
	RemoveTemp(ctx context.Context, cutoff time.Time) (int, error)
}

var _ TempRemover = (*fsStore)(nil)

// RemoveTemp deletes the leftover temporary files of killed writes that are
// older than cutoff, anywhere under the root. Symbolic links are not
// followed; files that vanish meanwhile are skipped.
func (s *fsStore) RemoveTemp(ctx context.Context, cutoff time.Time) (int, error) {
	n := 0
	err := filepath.WalkDir(s.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() || !d.Type().IsRegular() || !strings.HasPrefix(d.Name(), fsTmpPrefix) {
			return nil
		}
		fi, err := d.Info()
		if err != nil || !fi.ModTime().Before(cutoff) {
			return nil // gone, or young: a write may be running
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		n++
		return nil
	})
	if err != nil {
		return n, s.err("remove-temp", "", err)
	}
	return n, nil
}

// RemoveTemp deletes the temporary files of s older than cutoff when s (or
// the store it wraps: Guard's, or any store with an Unwrap() Store method)
// is a TempRemover; ok is false when no layer keeps temporary files.
func RemoveTemp(ctx context.Context, s Store, cutoff time.Time) (n int, ok bool, err error) {
	for s != nil {
		if tr, is := s.(TempRemover); is {
			if err := ctx.Err(); err != nil {
				return 0, true, err
			}
			n, err := tr.RemoveTemp(ctx, cutoff)
			return n, true, err
		}
		u, is := s.(interface{ Unwrap() Store })
		if !is {
			break
		}
		s = u.Unwrap()
	}
	return 0, false, nil
}
