package repocli

import (
	"errors"
	"testing"

	"github.com/cairn-backup/cairn/internal/cli"
)

// FuzzParseSize checks the --block-size parser: an accepted size is between
// 0 and 1 TiB (it never wraps around), a refused one is a usage error.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"4MiB", "64K", "4194304", "1G", "0", "", "-1", "99999999999999999999KiB",
		"1024G", "1025G", "18446744073709551616", "4 M", "4MB", "KiB", "1.5M"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseSize(s)
		if err != nil {
			var ue cli.UsageError
			if !errors.As(err, &ue) {
				t.Fatalf("ParseSize(%q): not a usage error: %v", s, err)
			}
			return
		}
		if v < 0 || v > 1<<40 {
			t.Fatalf("ParseSize(%q) = %d", s, v)
		}
		if bs, err := ParseBlockSize(s); err == nil && bs != 0 && int64(bs) != v {
			t.Fatalf("ParseBlockSize(%q) = %d, ParseSize %d", s, bs, v)
		}
	})
}
