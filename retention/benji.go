package retention

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Benji's time categories, in the order an item is tried against them.
const (
	catHours = iota
	catDays
	catWeeks
	catMonths
	catYears
	numCats
)

var catNames = [numCats]string{"hours", "days", "weeks", "months", "years"}
var catUnits = [numCats]string{"hour", "day", "week", "month", "year"}

var benjiToken = regexp.MustCompile(`^([a-z]+)([0-9]+)$`)

// ParseBenji parses Benji's retention rules: comma-separated latestN, hoursN,
// daysN, weeksN, monthsN and yearsN, each at most once, N > 0, no spaces, in
// any order, such as "latest3,hours24,days30,months3".
//
// latestN keeps the N youngest items and takes them out of further
// consideration. Every other item's age is counted in calendar units in loc
// relative to now: hours from the full hour, days from 00:00, weeks from
// Monday 00:00, months from the 1st, years from January 1st (an item from
// 23:59 yesterday is 1 day old). An item falls into the first category whose
// count its age does not exceed (inclusive: hours24 has the 25 buckets 0..24),
// and each bucket of each category keeps its oldest item. Items that fit no
// category are destroyed; items newer than now are kept. A nil loc means the
// local time zone, as with Benji.
func ParseBenji(rules string, loc *time.Location) (Policy, error) {
	if loc == nil {
		loc = time.Local
	}
	b := &benji{loc: loc}
	seen := map[string]bool{}
	col := 1
	if rules == "" {
		return nil, &ParseError{Spec: rules, Msg: "empty policy (want rules such as latest7 or days30,months3)"}
	}
	for i, tok := range strings.Split(rules, ",") {
		fail := func(format string, a ...any) error {
			return &ParseError{Spec: rules, Token: tok, Element: i + 1, Column: col, Msg: fmt.Sprintf(format, a...)}
		}
		m := benjiToken.FindStringSubmatch(tok)
		switch {
		case tok == "":
			return nil, fail("empty element")
		case m == nil:
			return nil, fail("%q is not a category followed by a count, such as days30", tok)
		case !knownBenjiCategory(m[1]):
			return nil, fail("unknown category %q in %q (want latest, hours, days, weeks, months or years)", m[1], tok)
		case seen[m[1]]:
			return nil, fail("%s listed more than once", m[1])
		}
		n, err := strconv.Atoi(m[2])
		if err != nil || n <= 0 {
			return nil, fail("%s must be a positive count", m[1])
		}
		seen[m[1]] = true
		b.set(m[1], n)
		col += len(tok) + 1
	}
	return b, nil
}

func knownBenjiCategory(c string) bool {
	if c == "latest" {
		return true
	}
	for _, n := range catNames {
		if n == c {
			return true
		}
	}
	return false
}

type benji struct {
	loc    *time.Location
	latest int
	counts [numCats]int // 0: category not in the rules
}

func (b *benji) set(cat string, n int) {
	if cat == "latest" {
		b.latest = n
		return
	}
	for c, name := range catNames {
		if name == cat {
			b.counts[c] = n
		}
	}
}

// String returns the rules in Benji's canonical order.
func (b *benji) String() string {
	var parts []string
	if b.latest > 0 {
		parts = append(parts, fmt.Sprintf("latest%d", b.latest))
	}
	for c, n := range b.counts {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%s%d", catNames[c], n))
		}
	}
	return strings.Join(parts, ",")
}

func (b *benji) Apply(now time.Time, items []Item) (keep, destroy []Item) {
	return applyRule(b, now, items)
}

func (b *benji) reasons(now time.Time, sorted []Item) []string {
	out := make([]string, len(sorted))
	i := 0
	for ; i < len(sorted) && i < b.latest; i++ {
		out[i] = fmt.Sprintf("latest%d (#%d)", b.latest, i+1)
	}
	type bucket struct{ cat, age int }
	oldest := map[bucket]int{}
	var order []bucket // buckets in first-seen order, for deterministic output
	for ; i < len(sorted); i++ {
		t := sorted[i].Created
		if t.After(now) {
			out[i] = "newer than now"
			continue
		}
		ages := calendarAges(t, now, b.loc)
		for c, n := range b.counts {
			if n > 0 && ages[c] <= n {
				k := bucket{c, ages[c]}
				if _, ok := oldest[k]; !ok {
					order = append(order, k)
				}
				oldest[k] = i // sorted youngest first: the last one seen is the oldest
				break
			}
		}
	}
	for _, k := range order {
		out[oldest[k]] = fmt.Sprintf("%s%d (%s %d)", catNames[k.cat], b.counts[k.cat], catUnits[k.cat], k.age)
	}
	return out
}

// calendarAges returns how many hours, days, weeks, months and years lie
// between the starts of the periods holding t and now, on the wall clock of
// loc (as Benji subtracts naive local times, a DST change does not shift the
// count).
func calendarAges(t, now time.Time, loc *time.Location) [numCats]int {
	t, now = t.In(loc), now.In(loc)
	wall := func(x time.Time, hour bool) int64 {
		h := 0
		if hour {
			h = x.Hour()
		}
		return time.Date(x.Year(), x.Month(), x.Day(), h, 0, 0, 0, time.UTC).Unix()
	}
	monday := func(x time.Time) int64 {
		return wall(x, false) - int64((int(x.Weekday())+6)%7)*86400
	}
	var a [numCats]int
	a[catHours] = int((wall(now, true) - wall(t, true)) / 3600)
	a[catDays] = int((wall(now, false) - wall(t, false)) / 86400)
	a[catWeeks] = int((monday(now) - monday(t)) / (7 * 86400))
	a[catMonths] = (now.Year()*12 + int(now.Month())) - (t.Year()*12 + int(t.Month()))
	a[catYears] = now.Year() - t.Year()
	return a
}
