package retention

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// maxGridSpan bounds a grid's total length so bucket edges never overflow
// time.Duration.
const maxGridSpan = 200 * 365 * 24 * time.Hour

// keepAll is the keep count of a (keep=all) interval.
const keepAll = -1

// gridGroup is one element of a grid spec: count intervals of one length.
type gridGroup struct {
	spec   string // the element as written, trimmed
	count  int
	length time.Duration
	keep   int // keepAll, or how many of the oldest items each interval keeps
}

type grid struct {
	spec   string
	groups []gridGroup
	total  int           // number of intervals
	span   time.Duration // sum of all interval lengths
	regex  *regexp.Regexp
}

var (
	gridElement  = regexp.MustCompile(`^(\d+)\s*x\s*(\d+)\s*([a-zA-Z]*)\s*(?:\((.*)\))?$`)
	gridKeep     = regexp.MustCompile(`^\s*keep\s*=\s*(\S+?)\s*$`)
	gridDuration = map[string]time.Duration{"s": time.Second, "m": time.Minute, "h": time.Hour, "d": 24 * time.Hour, "w": 7 * 24 * time.Hour}
)

// ParseGrid parses a zrepl retention grid such as
// "1x1h(keep=all) | 24x1h | 30x1d | 6x30d" and returns the policy of zrepl's
// grid keep rule restricted to items whose name matches regex ("" matches
// everything).
//
// Intervals are separated by "|", each "<count>x<duration>" with an optional
// "(keep=<n>)" or "(keep=all)" (default keep=1); durations are in s, m, h, d
// (24h) or w (7d). Interval lengths may not decrease, except after a prefix of
// keep=all intervals. The grid is anchored at the creation time of the
// youngest matching item, not at now: intervals are laid back to back from
// there, each holding the times t with older edge < t <= younger edge, and
// each keeps its keep oldest items. Matching items older than the last
// interval are destroyed; items that do not match regex are not kept by this
// rule.
func ParseGrid(gridSpec, regex string) (Policy, error) {
	re, err := compileRegex(regex)
	if err != nil {
		return nil, err
	}
	g := &grid{spec: gridSpec, regex: re}
	if strings.TrimSpace(gridSpec) == "" {
		return nil, &ParseError{Spec: gridSpec, Msg: "empty grid (want intervals such as 24x1h | 30x1d)"}
	}
	col := 1
	for i, raw := range strings.Split(gridSpec, "|") {
		lead := len(raw) - len(strings.TrimLeft(raw, " \t\n"))
		tok := strings.TrimSpace(raw)
		fail := func(format string, a ...any) error {
			return &ParseError{Spec: gridSpec, Token: tok, Element: i + 1, Column: col + lead, Msg: fmt.Sprintf("interval %q: ", tok) + fmt.Sprintf(format, a...)}
		}
		grp, msg := parseGridGroup(tok)
		if msg != "" {
			return nil, fail("%s", msg)
		}
		if msg := g.checkOrder(grp); msg != "" {
			return nil, fail("%s", msg)
		}
		if grp.count > int(maxGridSpan/grp.length) || maxGridSpan-g.span < time.Duration(grp.count)*grp.length {
			return nil, fail("grid spans more than %d years", int(maxGridSpan/(365*24*time.Hour)))
		}
		g.span += time.Duration(grp.count) * grp.length
		g.total += grp.count
		g.groups = append(g.groups, grp)
		col += len(raw) + 1
	}
	return g, nil
}

// parseGridGroup parses one trimmed grid element, or says what is wrong.
func parseGridGroup(tok string) (gridGroup, string) {
	g := gridGroup{spec: tok, keep: 1}
	m := gridElement.FindStringSubmatch(tok)
	if tok == "" {
		return g, "empty interval"
	}
	if m == nil {
		return g, "want <count>x<duration>, optionally followed by (keep=N) or (keep=all)"
	}
	var err error
	if g.count, err = strconv.Atoi(m[1]); err != nil || g.count <= 0 {
		return g, "count must be a positive integer"
	}
	unit, ok := gridDuration[m[3]]
	if !ok {
		return g, fmt.Sprintf("unknown duration unit %q (want s, m, h, d or w)", m[3])
	}
	n, err := strconv.ParseInt(m[2], 10, 64)
	if err != nil || n <= 0 || n > int64(maxGridSpan/unit) {
		return g, "duration must be a positive length of at most 200 years"
	}
	g.length = time.Duration(n) * unit
	if m[4] != "" || strings.Contains(tok, "(") {
		k := gridKeep.FindStringSubmatch(m[4])
		switch {
		case k == nil:
			return g, "unknown interval parameter (want keep=N or keep=all)"
		case k[1] == "all":
			g.keep = keepAll
		default:
			if g.keep, err = strconv.Atoi(k[1]); err != nil || g.keep <= 0 {
				return g, "keep must be a positive integer or all"
			}
		}
	}
	return g, ""
}

// checkOrder enforces zrepl's rule: lengths never decrease, except right
// after intervals that all keep everything.
func (g *grid) checkOrder(next gridGroup) string {
	if len(g.groups) == 0 {
		return ""
	}
	prev := g.groups[len(g.groups)-1]
	if next.length >= prev.length {
		return ""
	}
	for _, p := range g.groups {
		if p.keep != keepAll {
			return fmt.Sprintf("interval length %v is shorter than the %v before it (lengths may only decrease after keep=all intervals)", next.length, prev.length)
		}
	}
	return ""
}

// String returns the grid as it was written.
func (g *grid) String() string { return "grid " + strings.TrimSpace(g.spec) }

func (g *grid) Apply(now time.Time, items []Item) (keep, destroy []Item) {
	return applyRule(g, now, items)
}

func (g *grid) reasons(_ time.Time, sorted []Item) []string {
	out := make([]string, len(sorted))
	anchor, found := time.Time{}, false
	members := map[int][]int{} // interval number -> item indices, youngest first
	for i, it := range sorted {
		if !g.regex.MatchString(it.Name) {
			continue
		}
		if !found {
			anchor, found = it.Created, true
		}
		if n, ok := g.interval(anchor.Sub(it.Created)); ok {
			members[n] = append(members[n], i)
		}
	}
	for n, idx := range members {
		grp := g.groupOf(n)
		first := 0
		if grp.keep != keepAll && len(idx) > grp.keep {
			first = len(idx) - grp.keep // the keep oldest are at the end
		}
		for _, i := range idx[first:] {
			out[i] = fmt.Sprintf("grid %s (interval %d of %d)", grp.spec, n+1, g.total)
		}
	}
	return out
}

// interval returns the 0-based number of the interval that holds an item of
// the given age (anchor minus creation time), or false when it is older than
// the grid. Interval k holds ages [start_k, start_k+length).
func (g *grid) interval(age time.Duration) (int, bool) {
	if age < 0 {
		return 0, false
	}
	n := 0
	for _, grp := range g.groups {
		span := time.Duration(grp.count) * grp.length
		if age < span {
			return n + int(age/grp.length), true
		}
		age -= span
		n += grp.count
	}
	return 0, false
}

func (g *grid) groupOf(n int) gridGroup {
	for _, grp := range g.groups {
		if n < grp.count {
			return grp
		}
		n -= grp.count
	}
	return g.groups[len(g.groups)-1]
}
