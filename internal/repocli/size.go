package repocli

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/internal/cli"
)

// ParseBlockSize parses a --block-size (see ParseSize); 0 means the
// default. A size blockdiff would refuse is a usage error.
func ParseBlockSize(s string) (int, error) {
	v, err := ParseSize(s)
	if err != nil || v == 0 {
		return 0, err
	}
	if err := blockdiff.CheckBlockSize(int(v)); err != nil {
		return 0, cli.UsageError{Err: fmt.Errorf("--block-size %s: %w", s, err)}
	}
	return int(v), nil
}

// ParseSize parses a byte count with an optional K/M/G suffix (powers of two:
// 4M, 4MiB and 4194304 are the same).
func ParseSize(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "B"), "I")
	mult := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'K':
			mult, t = 1<<10, t[:n-1]
		case 'M':
			mult, t = 1<<20, t[:n-1]
		case 'G':
			mult, t = 1<<30, t[:n-1]
		}
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v < 0 || v > 1<<40/mult {
		return 0, cli.Usagef("size %q: want a number with an optional K, M or G suffix", s)
	}
	return v * mult, nil
}
