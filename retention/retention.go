// Package retention decides which backups to keep: one grammar for every cairn
// tool, with the semantics of the two tools cairn replaces.
//
//   - Benji's rules (ParseBenji): "latest7", "latest3,hours24,days30,months3".
//   - zrepl's keep rules: grid (ParseGrid) "1x1h(keep=all) | 24x1h | 30x1d | 6x30d",
//     last_n (LastN) and regex (Regex). not_replicated depends on replication
//     state, so its caller expresses it with Func.
//
// A Policy is parsed once and applied many times. Union combines policies the
// way both tools combine rules: an item is destroyed only when no policy keeps
// it. Apply is deterministic and does not depend on the order of its input:
// results come back youngest first, ties in time broken by name, descending.
// Explain also says which rule kept each item.
//
// The package is pure: no I/O, no clock (callers pass now).
package retention

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Item is one backup a policy decides about: a snapshot or a version.
type Item struct {
	Name    string    // snapshot name or version ID; regexes match against it
	Created time.Time // creation time
}

// Policy splits items into those to keep and those to destroy.
type Policy interface {
	// Apply splits items into those to keep and those to destroy; every item lands in
	// exactly one of the two. Items may come in any order.
	Apply(now time.Time, items []Item) (keep, destroy []Item)
}

// Decision is the verdict on one item, with the rules that kept it.
type Decision struct {
	Item    Item
	Keep    bool
	Reasons []string // for a kept item, each rule that kept it, e.g. "days30 (day 3)"; empty when destroyed
}

// rule is what every policy of this package implements: for items in
// canonical order, the reason each one is kept, or "" for none.
type rule interface {
	reasons(now time.Time, sorted []Item) []string
}

// canonical returns a copy of items sorted youngest first, ties in time broken
// by name descending (zrepl's order for last_n), so that results never depend
// on the order of the input.
func canonical(items []Item) []Item {
	s := slices.Clone(items)
	slices.SortStableFunc(s, compareYoungestFirst)
	return s
}

func compareYoungestFirst(a, b Item) int {
	if c := b.Created.Compare(a.Created); c != 0 {
		return c
	}
	return cmp.Compare(b.Name, a.Name)
}

// split turns per-item reasons into the keep and destroy lists of Apply.
func split(sorted []Item, reasons []string) (keep, destroy []Item) {
	keep, destroy = []Item{}, []Item{}
	for i, it := range sorted {
		if reasons[i] != "" {
			keep = append(keep, it)
		} else {
			destroy = append(destroy, it)
		}
	}
	return keep, destroy
}

func applyRule(r rule, now time.Time, items []Item) (keep, destroy []Item) {
	s := canonical(items)
	return split(s, r.reasons(now, s))
}

// Explain applies p and returns one Decision per item, youngest first. For a
// Policy of another package it can only say "kept by policy".
func Explain(p Policy, now time.Time, items []Item) []Decision {
	s := canonical(items)
	var rs [][]string
	if u, ok := p.(union); ok {
		rs = u.allReasons(now, s)
	} else {
		rs = make([][]string, len(s))
		for i, r := range reasonsOf(p, now, s) {
			if r != "" {
				rs[i] = []string{r}
			}
		}
	}
	out := make([]Decision, len(s))
	for i, it := range s {
		out[i] = Decision{Item: it, Keep: len(rs[i]) > 0, Reasons: rs[i]}
	}
	return out
}

// reasonsOf evaluates any Policy on sorted items, falling back to Apply for
// policies that are not ours.
func reasonsOf(p Policy, now time.Time, sorted []Item) []string {
	if r, ok := p.(rule); ok {
		return r.reasons(now, sorted)
	}
	keep, _ := p.Apply(now, sorted)
	kept := map[itemKey]int{}
	for _, it := range keep {
		kept[keyOf(it)]++
	}
	out := make([]string, len(sorted))
	for i, it := range sorted {
		if k := keyOf(it); kept[k] > 0 {
			kept[k]--
			out[i] = "kept by policy"
		}
	}
	return out
}

type itemKey struct {
	name string
	ns   int64
}

func keyOf(it Item) itemKey { return itemKey{it.Name, it.Created.UnixNano()} }

// Union returns a policy that destroys only what no policy keeps. A Union of
// no policies keeps everything, as zrepl does with an empty rule list.
func Union(policies ...Policy) Policy { return union(slices.Clone(policies)) }

type union []Policy

func (u union) Apply(now time.Time, items []Item) (keep, destroy []Item) {
	return applyRule(u, now, items)
}

func (u union) reasons(now time.Time, sorted []Item) []string {
	all := u.allReasons(now, sorted)
	out := make([]string, len(sorted))
	for i, rs := range all {
		out[i] = strings.Join(rs, "; ")
	}
	return out
}

func (u union) allReasons(now time.Time, sorted []Item) [][]string {
	out := make([][]string, len(sorted))
	if len(u) == 0 {
		for i := range out {
			out[i] = []string{"no rules"}
		}
		return out
	}
	for _, p := range u {
		for i, r := range reasonsOf(p, now, sorted) {
			if r != "" {
				out[i] = append(out[i], r)
			}
		}
	}
	return out
}

func (u union) String() string {
	parts := make([]string, len(u))
	for i, p := range u {
		parts[i] = fmt.Sprint(p)
	}
	return "union(" + strings.Join(parts, ", ") + ")"
}

// Func returns a policy that keeps the items for which keep returns true; name
// is the reason Explain gives. Callers use it for rules that depend on state
// this package cannot see, such as zrepl's not_replicated.
func Func(name string, keep func(Item) bool) Policy { return funcRule{name, keep} }

type funcRule struct {
	name string
	keep func(Item) bool
}

func (f funcRule) Apply(now time.Time, items []Item) (keep, destroy []Item) {
	return applyRule(f, now, items)
}

func (f funcRule) reasons(_ time.Time, sorted []Item) []string {
	out := make([]string, len(sorted))
	for i, it := range sorted {
		if f.keep(it) {
			out[i] = f.name
		}
	}
	return out
}

func (f funcRule) String() string { return f.name }

// ParseError is a bad policy specification: it names the offending token and
// where it is.
type ParseError struct {
	Spec    string // the whole specification
	Token   string // the offending element, trimmed
	Element int    // 1-based position of the element in the list
	Column  int    // 1-based byte column of the element in Spec
	Msg     string // what is wrong with it
}

func (e *ParseError) Error() string {
	if e.Element == 0 {
		return fmt.Sprintf("retention: %q: %s", e.Spec, e.Msg)
	}
	return fmt.Sprintf("retention: %q: %s (element %d, column %d)", e.Spec, e.Msg, e.Element, e.Column)
}

// Parse reads either grammar: a zrepl grid when spec starts with a digit
// ("24x1h | 30x1d"), Benji rules otherwise ("latest7,days30"). This is what
// the CLIs' enforce commands accept.
func Parse(spec string, loc *time.Location) (Policy, error) {
	t := strings.TrimSpace(spec)
	if t != "" && t[0] >= '0' && t[0] <= '9' {
		return ParseGrid(spec, "")
	}
	return ParseBenji(spec, loc)
}
