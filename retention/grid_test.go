package retention

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// aged returns an item named after its age before anchor.
func aged(anchor time.Time, age time.Duration) Item {
	return Item{Name: "snap-" + age.String(), Created: anchor.Add(-age)}
}

func mustGrid(t *testing.T, spec, regex string) Policy {
	t.Helper()
	p, err := ParseGrid(spec, regex)
	require.NoError(t, err)
	return p
}

func TestGrid(t *testing.T) {
	anchor := at("2026-11-26 12:00")
	m := time.Minute
	cases := []struct {
		name    string
		spec    string
		ages    []time.Duration // of items before the youngest (age 0 is added)
		destroy []time.Duration
	}{
		{
			name: "keep=all, then one per interval, edges belong to the older bucket's younger side",
			spec: "1x1h(keep=all) | 2x1h",
			// interval 1 holds ages [0,60m), interval 2 [60m,120m), interval 3 [120m,180m)
			ages:    []time.Duration{10 * m, 59 * m, 60 * m, 61 * m, 90 * m, 119 * m, 120 * m, 150 * m, 180 * m, 500 * m},
			destroy: []time.Duration{60 * m, 61 * m, 90 * m, 120 * m, 180 * m, 500 * m},
		},
		{
			name:    "keep=2 keeps the two oldest of each interval",
			spec:    "2x1h(keep=2)",
			ages:    []time.Duration{10 * m, 20 * m, 30 * m, 70 * m, 80 * m},
			destroy: []time.Duration{0, 10 * m},
		},
		{
			name:    "default keep=1 applies to the anchor's interval too",
			spec:    "1x1h",
			ages:    []time.Duration{10 * m, 59 * m},
			destroy: []time.Duration{0, 10 * m},
		},
		{
			name:    "days and weeks",
			spec:    "1x1d | 1x1w",
			ages:    []time.Duration{23 * time.Hour, 24 * time.Hour, 25 * time.Hour, 8 * 24 * time.Hour, 9 * 24 * time.Hour},
			destroy: []time.Duration{0, 24 * time.Hour, 8 * 24 * time.Hour, 9 * 24 * time.Hour},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := []Item{aged(anchor, 0)}
			for _, a := range c.ages {
				in = append(in, aged(anchor, a))
			}
			_, destroy := mustGrid(t, c.spec, "").Apply(anchor.Add(1000*time.Hour), in)
			var want []string
			for _, a := range c.destroy {
				want = append(want, aged(anchor, a).Name)
			}
			assert.ElementsMatch(t, want, names(destroy))
		})
	}
}

// TestGridAnchor: the grid is laid from the youngest matching item, not from
// now and not from a younger item the regex leaves out.
func TestGridAnchor(t *testing.T) {
	anchor := at("2026-11-26 12:00")
	in := []Item{
		{"manual_x", anchor.Add(5 * time.Hour)},
		{"zrepl_1", anchor},
		{"zrepl_2", anchor.Add(-30 * time.Minute)},
		{"zrepl_3", anchor.Add(-90 * time.Minute)},
		{"zrepl_4", anchor.Add(-3 * time.Hour)},
	}
	keep, destroy := mustGrid(t, "1x1h(keep=all) | 1x1h", "^zrepl_").Apply(anchor.Add(100*time.Hour), in)
	assert.Equal(t, []string{"zrepl_1", "zrepl_2", "zrepl_3"}, names(keep))
	assert.Equal(t, []string{"manual_x", "zrepl_4"}, names(destroy), "non-matching items are not kept by the grid")
}

// TestSeedGrid runs the seed's receiver grid over 40 days of snapshots taken
// every 10 minutes and checks the counts each interval keeps.
func TestSeedGrid(t *testing.T) {
	p := mustGrid(t, "1x1h(keep=all) | 24x1h | 30x1d | 6x30d", "^zrepl_")
	newest := at("2026-11-26 12:00")
	var in []Item
	for age := time.Duration(0); age < 40*24*time.Hour; age += 10 * time.Minute {
		t := newest.Add(-age)
		in = append(in, Item{"zrepl_" + t.Format("20060102_150405_000"), t})
	}
	keep, destroy := p.Apply(newest, in)
	// 6 in the first hour (ages 0..50m), 24 hourly, 30 daily, and one for the
	// 30-day interval that holds days 31..40 of the 40 days.
	assert.Len(t, keep, 6+24+30+1)
	assert.Len(t, destroy, len(in)-len(keep))
	// Each hourly interval keeps its oldest: ages 1h50m, 2h50m, ...
	assert.Contains(t, names(keep), "zrepl_"+newest.Add(-110*time.Minute).Format("20060102_150405_000"))
	assert.NotContains(t, names(keep), "zrepl_"+newest.Add(-60*time.Minute).Format("20060102_150405_000"))
}

func TestGridReasons(t *testing.T) {
	anchor := at("2026-11-26 12:00")
	d := Explain(mustGrid(t, "1x1h(keep=all) | 24x1h", ""), anchor, []Item{aged(anchor, 0), aged(anchor, 90*time.Minute)})
	assert.Equal(t, []string{"grid 1x1h(keep=all) (interval 1 of 25)"}, d[0].Reasons)
	assert.Equal(t, []string{"grid 24x1h (interval 2 of 25)"}, d[1].Reasons)
}

func TestGridSyntax(t *testing.T) {
	good := []string{
		"1x1h(keep=all) | 24x1h | 30x1d | 6x30d",
		" 1 x 1h ( keep = all ) |24x1h|30 x 1d",
		"1x1h(keep=all) | 1x30m",
		"2x1h(keep=all) | 1x1m(keep=all) | 1x1d",
		"10x1s|10x1m|1x1w",
		"3x2h(keep=3)",
	}
	for _, s := range good {
		_, err := ParseGrid(s, "")
		assert.NoError(t, err, s)
	}
	bad := []struct{ spec, want string }{
		{"", `retention: "": empty grid`},
		{"   ", `empty grid`},
		{"0x1h", `interval "0x1h": count must be a positive integer (element 1, column 1)`},
		{"1x0h", `interval "1x0h": duration must be a positive length`},
		{"1x1y", `interval "1x1y": unknown duration unit "y" (want s, m, h, d or w) (element 1`},
		{"1x1", `unknown duration unit ""`},
		{"1x1h(keep=0)", `keep must be a positive integer or all`},
		{"1x1h(keep=-1)", `keep must be a positive integer or all`},
		{"1x1h(keep=some)", `keep must be a positive integer or all`},
		{"1x1h(foo=1)", `unknown interval parameter (want keep=N or keep=all)`},
		{"1x1h()", `unknown interval parameter`},
		{"1x1h(keep=all", `want <count>x<duration>`},
		{"1x1h||1x1d", `empty interval (element 2, column 6)`},
		{"24x1h | 30x1d | abc", `interval "abc": want <count>x<duration>, optionally followed by (keep=N) or (keep=all) (element 3, column 17)`},
		{"1x1h | 1x30m", `interval "1x30m": interval length 30m0s is shorter than the 1h0m0s before it (lengths may only decrease after keep=all intervals) (element 2, column 8)`},
		{"2x1h(keep=all) | 1x1d | 1x1h", `shorter than the 24h0m0s before it`},
		{"99999999999999999999x1h", `count must be a positive integer`},
		{"1000000x1w", `grid spans more than 200 years`},
		{"1x99999999999w", `duration must be a positive length of at most 200 years`},
		{"100x1w | 11000x1w", `grid spans more than 200 years (element 2`},
	}
	for _, c := range bad {
		_, err := ParseGrid(c.spec, "")
		require.Error(t, err, c.spec)
		assert.Contains(t, err.Error(), c.want, c.spec)
	}
	_, err := ParseGrid("1x1h", "zrepl_(")
	assert.ErrorContains(t, err, "bad regex")
}

func TestParseEitherGrammar(t *testing.T) {
	p, err := Parse("latest7", time.UTC)
	require.NoError(t, err)
	assert.Equal(t, "latest7", fmt.Sprint(p))
	p, err = Parse(" 24x1h | 30x1d", time.UTC)
	require.NoError(t, err)
	assert.Equal(t, "grid 24x1h | 30x1d", fmt.Sprint(p))
	_, err = Parse("7days", time.UTC)
	assert.ErrorContains(t, err, `interval "7days"`)
}
