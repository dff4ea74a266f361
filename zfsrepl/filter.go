package zfsrepl

import (
	"fmt"
	"slices"
	"strings"

	"github.com/cairn-backup/cairn/zfsrepl/zfs"
)

// Filter selects filesystems with zrepl's `filesystems` syntax: keys are
// dataset paths, "path<" also matches everything below path, values include
// (true) or exclude (false); the most specific (longest) matching key wins.
type Filter struct {
	rules []filterRule
}

type filterRule struct {
	path    string
	subtree bool
	include bool
}

// NewFilter parses a zrepl `filesystems` map.
func NewFilter(m map[string]bool) (*Filter, error) {
	f := &Filter{}
	for k, v := range m {
		path, subtree := strings.CutSuffix(k, "<")
		if path == "" && subtree {
			// "<" alone matches every filesystem, as in zrepl.
			f.rules = append(f.rules, filterRule{path: "", subtree: true, include: v})
			continue
		}
		if err := zfs.ValidateFilesystem(path); err != nil {
			return nil, fmt.Errorf("filesystems: %q: %w", k, err)
		}
		f.rules = append(f.rules, filterRule{path: path, subtree: subtree, include: v})
	}
	slices.SortFunc(f.rules, func(a, b filterRule) int { return strings.Compare(a.path, b.path) })
	return f, nil
}

// Match reports whether the filter selects fs.
func (f *Filter) Match(fs string) bool {
	best, bestLen, bestExact := false, -1, false
	for _, r := range f.rules {
		exact := fs == r.path
		under := r.subtree && (r.path == "" || exact || strings.HasPrefix(fs, r.path+"/"))
		if !exact && !under {
			continue
		}
		if !r.subtree && !exact {
			continue
		}
		l := len(r.path)
		// Longer paths are more specific; for the same path, an exact
		// (non-subtree) rule wins over "path<".
		if l > bestLen || (l == bestLen && !r.subtree && !bestExact) {
			best, bestLen, bestExact = r.include, l, !r.subtree
		}
	}
	return best
}

// Roots returns the pools the filter can select from ("" for all pools).
func (f *Filter) Roots() []string {
	var roots []string
	for _, r := range f.rules {
		if !r.include {
			continue
		}
		if r.path == "" {
			return []string{""}
		}
		pool, _, _ := strings.Cut(r.path, "/")
		if !slices.Contains(roots, pool) {
			roots = append(roots, pool)
		}
	}
	return roots
}
