package retention

import (
	"testing"
	"time"
)

func TestWithin(t *testing.T) {
	now := time.Date(2026, 12, 6, 3, 0, 0, 0, time.UTC)
	p, err := Within(720 * time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	items := []Item{
		{Name: "today", Created: now.Add(-time.Hour)},
		{Name: "29d", Created: now.Add(-29 * 24 * time.Hour)},
		{Name: "30d", Created: now.Add(-720 * time.Hour)}, // expired exactly at its TTL, as in Velero
		{Name: "40d", Created: now.Add(-40 * 24 * time.Hour)},
	}
	keep, destroy := p.Apply(now, items)
	if len(keep) != 2 || keep[0].Name != "today" || keep[1].Name != "29d" {
		t.Errorf("keep %v", keep)
	}
	if len(destroy) != 2 || destroy[0].Name != "30d" || destroy[1].Name != "40d" {
		t.Errorf("destroy %v", destroy)
	}
	ds := Explain(Union(p, mustBenji(t, "latest1", time.UTC)), now, items)
	if ds[0].Reasons[0] != "within 720h0m0s (age 1h0m0s)" {
		t.Errorf("reasons %v", ds[0].Reasons)
	}
	if !ds[0].Keep || ds[3].Keep {
		t.Errorf("union: %+v", ds)
	}
	for _, d := range []time.Duration{0, -time.Hour} {
		if _, err := Within(d); err == nil {
			t.Errorf("Within(%s): no error", d)
		}
	}
}
