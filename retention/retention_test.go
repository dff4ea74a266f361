package retention

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLastN(t *testing.T) {
	ts := at("2026-11-26 08:00")
	in := []Item{
		{"zrepl_a", ts}, {"zrepl_c", ts}, {"zrepl_b", ts},
		{"manual", ts.Add(time.Hour)},
		{"zrepl_old", ts.Add(-time.Hour)},
	}
	p, err := LastN(2, "^zrepl_")
	require.NoError(t, err)
	keep, destroy := p.Apply(now, in)
	assert.Equal(t, []string{"zrepl_c", "zrepl_b"}, names(keep), "ties broken by name, descending")
	assert.Equal(t, []string{"manual", "zrepl_a", "zrepl_old"}, names(destroy), "non-matching items are not kept")

	p, err = LastN(10, "")
	require.NoError(t, err)
	keep, _ = p.Apply(now, in)
	assert.Len(t, keep, len(in))

	_, err = LastN(0, "")
	assert.ErrorContains(t, err, "last_n count must be positive, got 0")
	_, err = LastN(3, "[")
	assert.ErrorContains(t, err, "bad regex")
}

func TestRegex(t *testing.T) {
	in := []Item{{"zrepl_1", now}, {"manual_1", now}, {"zrepl_2", now}}
	p, err := Regex("^zrepl_", false)
	require.NoError(t, err)
	keep, destroy := p.Apply(now, in)
	assert.Equal(t, []string{"zrepl_2", "zrepl_1"}, names(keep))
	assert.Equal(t, []string{"manual_1"}, names(destroy))

	p, err = Regex("^zrepl_", true)
	require.NoError(t, err)
	keep, destroy = p.Apply(now, in)
	assert.Equal(t, []string{"manual_1"}, names(keep))
	assert.Equal(t, []string{"zrepl_2", "zrepl_1"}, names(destroy))
}

func TestUnion(t *testing.T) {
	in := items("2026-11-26 12:00", "2026-11-25 12:00", "2026-11-24 12:00", "2026-11-23 12:00")
	in = append(in, Item{"pinned", at("2026-11-01 00:00")})
	latest := mustBenji(t, "latest2", time.UTC)
	pinned, err := Regex("^pinned$", false)
	require.NoError(t, err)
	u := Union(latest, pinned)
	keep, destroy := u.Apply(now, in)
	assert.Equal(t, []string{"2026-11-26 12:00", "2026-11-25 12:00", "pinned"}, names(keep))
	assert.Equal(t, []string{"2026-11-24 12:00", "2026-11-23 12:00"}, names(destroy))

	// An item kept by two rules lists both.
	d := Explain(Union(latest, Func("not_replicated", func(it Item) bool { return it.Name == "2026-11-26 12:00" })), now, in)
	assert.Equal(t, []string{"latest2 (#1)", "not_replicated"}, d[0].Reasons)

	// No rules keep everything, as zrepl does.
	keep, destroy = Union().Apply(now, in)
	assert.Len(t, keep, len(in))
	assert.Empty(t, destroy)
}

// foreign is a Policy from outside the package: Union and Explain must still
// treat it right.
type foreign struct{}

func (foreign) Apply(_ time.Time, items []Item) (keep, destroy []Item) {
	for _, it := range items {
		if it.Name == "keep-me" {
			keep = append(keep, it)
		} else {
			destroy = append(destroy, it)
		}
	}
	return keep, destroy
}

func TestUnionWithForeignPolicy(t *testing.T) {
	in := []Item{{"keep-me", now}, {"other", now.Add(-time.Hour)}, {"keep-me", now.Add(-2 * time.Hour)}}
	keep, destroy := Union(foreign{}).Apply(now, in)
	assert.Equal(t, []string{"keep-me", "keep-me"}, names(keep))
	assert.Equal(t, []string{"other"}, names(destroy))
	d := Explain(foreign{}, now, in)
	assert.Equal(t, []string{"kept by policy"}, d[0].Reasons)
}

// randomPolicies covers every rule type, alone and combined.
func randomPolicies(t *testing.T) []Policy {
	t.Helper()
	b := mustBenji(t, "latest3,hours24,days30,weeks4,months3,years1", time.UTC)
	g := mustGrid(t, "1x1h(keep=all) | 24x1h | 30x1d | 6x30d", "^zrepl_")
	l, _ := LastN(5, "")
	r, _ := Regex("_1", true)
	return []Policy{b, g, l, r, Union(b, g), Union(g, l, r), Union()}
}

// randomItems makes items with many ties in time and in name.
func randomItems(rng *rand.Rand) []Item {
	n := rng.IntN(60)
	out := make([]Item, n)
	for i := range out {
		prefix := []string{"zrepl_", "manual_", "b-"}[rng.IntN(3)]
		age := time.Duration(rng.IntN(400*24)) * time.Hour / time.Duration(1+rng.IntN(4))
		if rng.IntN(10) == 0 {
			age = -age / 100 // in the future
		}
		out[i] = Item{fmt.Sprintf("%s%d", prefix, rng.IntN(20)), now.Add(-age)}
	}
	return out
}

func sortedNames(its []Item) []string {
	var s []string
	for _, it := range its {
		s = append(s, it.Name+"@"+it.Created.Format(time.RFC3339))
	}
	slices.Sort(s)
	return s
}

// TestProperties: keep ∪ destroy is the input, the two are disjoint (as
// multisets), and the result does not depend on the input's order.
func TestProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, p := range randomPolicies(t) {
		for range 200 {
			in := randomItems(rng)
			keep, destroy := p.Apply(now, in)
			all := append(slices.Clone(keep), destroy...)
			require.Equal(t, sortedNames(in), sortedNames(all), "%v: keep+destroy must be the input", p)

			shuffled := slices.Clone(in)
			rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			keep2, destroy2 := p.Apply(now, shuffled)
			require.Equal(t, keep, keep2, "%v: order of input changed keep", p)
			require.Equal(t, destroy, destroy2, "%v: order of input changed destroy", p)

			for i, d := range Explain(p, now, in) {
				require.Equal(t, d.Keep, len(d.Reasons) > 0, "decision %d", i)
			}
		}
	}
}

// TestUnionIsUnionOfKeeps: an item survives a union exactly when one of its
// policies alone keeps it.
func TestUnionIsUnionOfKeeps(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	ps := randomPolicies(t)[:4]
	u := Union(ps...)
	for range 200 {
		in := randomItems(rng)
		want := map[string]int{}
		for _, p := range ps {
			for _, d := range Explain(p, now, in) {
				if d.Keep {
					want[d.Item.Name+d.Item.Created.String()] = 1
				}
			}
		}
		got := map[string]int{}
		keep, _ := u.Apply(now, in)
		for _, it := range keep {
			got[it.Name+it.Created.String()] = 1
		}
		require.Equal(t, want, got)
	}
}
