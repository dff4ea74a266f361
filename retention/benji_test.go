package retention

import (
	"testing"
	"time"
	_ "time/tzdata" // Europe/Berlin for the DST cases, whatever the host has

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// now is a Thursday afternoon.
var now = time.Date(2026, 11, 26, 14, 30, 0, 0, time.UTC)

func at(s string) time.Time {
	t, err := time.Parse("2006-01-02 15:04", s)
	if err != nil {
		panic(err)
	}
	return t
}

// items names each item after its creation time, so failures read clearly.
func items(times ...string) []Item {
	out := make([]Item, len(times))
	for i, s := range times {
		out[i] = Item{Name: s, Created: at(s)}
	}
	return out
}

func names(its []Item) []string {
	out := []string{}
	for _, it := range its {
		out = append(out, it.Name)
	}
	return out
}

func mustBenji(t *testing.T, rules string, loc *time.Location) Policy {
	t.Helper()
	p, err := ParseBenji(rules, loc)
	require.NoError(t, err)
	return p
}

func TestBenji(t *testing.T) {
	cases := []struct {
		name    string
		rules   string
		items   []Item
		keep    []string // youngest first
		destroy []string // youngest first
	}{
		{
			name:    "latest keeps the youngest",
			rules:   "latest3",
			items:   items("2026-11-20 07:30", "2026-11-26 07:30", "2026-11-24 07:30", "2026-11-25 07:30", "2026-11-23 07:30"),
			keep:    []string{"2026-11-26 07:30", "2026-11-25 07:30", "2026-11-24 07:30"},
			destroy: []string{"2026-11-23 07:30", "2026-11-20 07:30"},
		},
		{
			name:    "23:59 yesterday is one day old; each day keeps its oldest",
			rules:   "days1",
			items:   items("2026-11-26 00:01", "2026-11-25 23:59", "2026-11-25 00:00", "2026-11-24 23:59"),
			keep:    []string{"2026-11-26 00:01", "2026-11-25 00:00"},
			destroy: []string{"2026-11-25 23:59", "2026-11-24 23:59"},
		},
		{
			name:  "hours are counted from the full hour, inclusive of the count",
			rules: "hours2",
			// now 14:30: 14:05 is hour 0, 13:59 and 13:00 hour 1, 12:00 hour 2, 11:59 hour 3
			items:   items("2026-11-26 14:05", "2026-11-26 13:59", "2026-11-26 13:00", "2026-11-26 12:00", "2026-11-26 11:59"),
			keep:    []string{"2026-11-26 14:05", "2026-11-26 13:00", "2026-11-26 12:00"},
			destroy: []string{"2026-11-26 13:59", "2026-11-26 11:59"},
		},
		{
			name:  "an item falls into the first category it fits",
			rules: "hours1,days1",
			// 14:00 hour 0; 13:10 hour 1; 09:00 and 02:00 day 0 (oldest 02:00 kept);
			// yesterday 20:00 and 01:00 day 1 (01:00 kept)
			items:   items("2026-11-26 14:00", "2026-11-26 13:10", "2026-11-26 09:00", "2026-11-26 02:00", "2026-11-25 20:00", "2026-11-25 01:00"),
			keep:    []string{"2026-11-26 14:00", "2026-11-26 13:10", "2026-11-26 02:00", "2026-11-25 01:00"},
			destroy: []string{"2026-11-26 09:00", "2026-11-25 20:00"},
		},
		{
			name:  "weeks start on Monday 00:00",
			rules: "weeks1",
			// Thursday now; Monday 00:00 is week 0, Sunday 23:59 week 1, the Monday before week 1 too
			items:   items("2026-11-26 08:00", "2026-11-23 00:00", "2026-11-22 23:59", "2026-11-16 00:00", "2026-11-15 23:59"),
			keep:    []string{"2026-11-23 00:00", "2026-11-16 00:00"},
			destroy: []string{"2026-11-26 08:00", "2026-11-22 23:59", "2026-11-15 23:59"},
		},
		{
			name:    "months start on the 1st",
			rules:   "months1",
			items:   items("2026-11-01 00:00", "2026-10-31 23:59", "2026-10-01 00:00", "2026-09-30 23:59"),
			keep:    []string{"2026-11-01 00:00", "2026-10-01 00:00"},
			destroy: []string{"2026-10-31 23:59", "2026-09-30 23:59"},
		},
		{
			name:    "years start on January 1st",
			rules:   "years1",
			items:   items("2026-06-01 00:00", "2026-01-01 00:00", "2025-12-31 23:59", "2025-01-01 00:00", "2024-12-31 23:59"),
			keep:    []string{"2026-01-01 00:00", "2025-01-01 00:00"},
			destroy: []string{"2026-06-01 00:00", "2025-12-31 23:59", "2024-12-31 23:59"},
		},
		{
			name:  "latest takes items out of further consideration",
			rules: "latest1,days1",
			// the youngest is kept by latest1; of the rest of today 08:00 is the oldest
			items:   items("2026-11-26 12:00", "2026-11-26 10:00", "2026-11-26 08:00"),
			keep:    []string{"2026-11-26 12:00", "2026-11-26 08:00"},
			destroy: []string{"2026-11-26 10:00"},
		},
		{
			name:    "items newer than now are kept",
			rules:   "days1",
			items:   items("2026-11-27 00:00", "2026-11-26 14:31", "2026-11-26 14:00", "2026-11-26 13:00"),
			keep:    []string{"2026-11-27 00:00", "2026-11-26 14:31", "2026-11-26 13:00"},
			destroy: []string{"2026-11-26 14:00"},
		},
		{
			name:    "items that fit no category are destroyed",
			rules:   "latest1,days2",
			items:   items("2026-11-20 07:30", "2026-11-19 07:30", "2026-11-18 07:30"),
			keep:    []string{"2026-11-20 07:30"},
			destroy: []string{"2026-11-19 07:30", "2026-11-18 07:30"},
		},
		{
			name:    "rules in any order mean the same",
			rules:   "days1,latest1",
			items:   items("2026-11-26 12:00", "2026-11-26 10:00", "2026-11-26 08:00"),
			keep:    []string{"2026-11-26 12:00", "2026-11-26 08:00"},
			destroy: []string{"2026-11-26 10:00"},
		},
		{
			name:    "no items",
			rules:   "latest7",
			items:   nil,
			keep:    []string{},
			destroy: []string{},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			keep, destroy := mustBenji(t, c.rules, time.UTC).Apply(now, c.items)
			assert.Equal(t, c.keep, names(keep), "keep")
			assert.Equal(t, c.destroy, names(destroy), "destroy")
		})
	}
}

// TestBenjiTies: items created at the same time are told apart by name, so
// the result does not depend on their order.
func TestBenjiTies(t *testing.T) {
	p := mustBenji(t, "days1", time.UTC)
	ts := at("2026-11-26 08:00")
	in := []Item{{"b", ts}, {"a", ts}, {"c", ts}}
	keep, destroy := p.Apply(now, in)
	assert.Equal(t, []string{"a"}, names(keep))
	assert.Equal(t, []string{"c", "b"}, names(destroy))
}

// TestBenjiTimeZone: ages are counted on loc's wall clock, as Benji does:
// across the end of summer time an hour is a wall-clock hour.
func TestBenjiTimeZone(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	require.NoError(t, err)
	// 2026-10-25: clocks go back from 03:00 CEST to 02:00 CET.
	ref := time.Date(2026, 10, 25, 12, 0, 0, 0, berlin)                // 11:00 UTC
	item := Item{"x", time.Date(2026, 10, 24, 23, 30, 0, 0, time.UTC)} // 01:30 CEST
	// Wall clock: 12:00 - 01:00 = 11 hours, though 12 real hours separate the hour starts.
	keep, _ := mustBenji(t, "latest1,hours11", berlin).Apply(ref, []Item{{"y", ref}, item})
	assert.Equal(t, []string{"y", "x"}, names(keep), "hours11 keeps an item 11 wall-clock hours old")
	keep, _ = mustBenji(t, "latest1,hours10", berlin).Apply(ref, []Item{{"y", ref}, item})
	assert.Equal(t, []string{"y"}, names(keep), "hours10 does not")

	// 00:30 CET on the 26th is today in Berlin but yesterday in UTC.
	late := Item{"late", time.Date(2026, 11, 25, 23, 30, 0, 0, time.UTC)}
	prev := Item{"prev", time.Date(2026, 11, 25, 22, 0, 0, 0, time.UTC)} // 23:00 CET on the 25th
	keep, _ = mustBenji(t, "days1", berlin).Apply(now, []Item{late, prev})
	assert.Equal(t, []string{"late", "prev"}, names(keep), "Berlin: day 0 and day 1")
	keep, _ = mustBenji(t, "days1", time.UTC).Apply(now, []Item{late, prev})
	assert.Equal(t, []string{"prev"}, names(keep), "UTC: both day 1, the oldest kept")
}

func TestBenjiReasons(t *testing.T) {
	p := mustBenji(t, "latest1,days2", time.UTC)
	d := Explain(p, now, items("2026-11-26 12:00", "2026-11-25 08:00", "2026-11-20 08:00"))
	require.Len(t, d, 3)
	assert.Equal(t, []string{"latest1 (#1)"}, d[0].Reasons)
	assert.Equal(t, []string{"days2 (day 1)"}, d[1].Reasons)
	assert.False(t, d[2].Keep)
	assert.Empty(t, d[2].Reasons)
	assert.Equal(t, "latest1,days2", p.(interface{ String() string }).String())
}

func TestBenjiErrors(t *testing.T) {
	cases := []struct{ rules, want string }{
		{"", `retention: "": empty policy`},
		{"days30,hours0", `retention: "days30,hours0": hours must be a positive count (element 2, column 8)`},
		{"days30,days7", `days listed more than once (element 2, column 8)`},
		{"latest7,minutes5", `unknown category "minutes" in "minutes5" (want latest, hours, days, weeks, months or years) (element 2, column 9)`},
		{"days 30", `"days 30" is not a category followed by a count, such as days30 (element 1, column 1)`},
		{"days30,", `empty element (element 2, column 8)`},
		{",days30", `empty element (element 1, column 1)`},
		{"latest-1", `"latest-1" is not a category followed by a count`},
		{"Days3", `"Days3" is not a category`},
		{"days99999999999999999999999", `days must be a positive count (element 1, column 1)`},
		{"latest7, days3", `" days3" is not a category followed by a count, such as days30 (element 2, column 9)`},
	}
	for _, c := range cases {
		_, err := ParseBenji(c.rules, time.UTC)
		require.Error(t, err, c.rules)
		assert.Contains(t, err.Error(), c.want, c.rules)
		var pe *ParseError
		assert.ErrorAs(t, err, &pe)
	}
}
