package retention

import (
	"errors"
	"testing"
	"time"
)

var fuzzItems = []Item{
	{"zrepl_1", now}, {"zrepl_2", now.Add(-90 * time.Minute)}, {"x", now.Add(-40 * 24 * time.Hour)},
	{"zrepl_3", now.Add(-400 * 24 * time.Hour)}, {"future", now.Add(time.Hour)},
}

// checkPartition fails when a policy loses or invents an item.
func checkPartition(t *testing.T, p Policy) {
	keep, destroy := p.Apply(now, fuzzItems)
	if len(keep)+len(destroy) != len(fuzzItems) {
		t.Fatalf("%v: %d kept + %d destroyed != %d items", p, len(keep), len(destroy), len(fuzzItems))
	}
}

func FuzzParseBenji(f *testing.F) {
	for _, s := range []string{"latest7", "latest3,hours24,days30,months3", "days30,hours0", "", ",", "years1,weeks99"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		p, err := ParseBenji(spec, time.UTC)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *ParseError", err)
			}
			return
		}
		checkPartition(t, p)
	})
}

func FuzzParseGrid(f *testing.F) {
	for _, s := range []string{"1x1h(keep=all) | 24x1h | 30x1d | 6x30d", "1x1h(keep=2)", "|", "0x1s", "1x1h(keep=all)|1x1s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		p, err := ParseGrid(spec, "")
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *ParseError", err)
			}
			return
		}
		checkPartition(t, p)
	})
}
