package retention

import (
	"fmt"
	"time"
)

// Within returns a rule that keeps the items created less than d before
// now: Velero's TTL (a backup expires d after it was taken; Velero's
// default is 720h) and restic's --keep-within, measured from now rather
// than from the newest item.
func Within(d time.Duration) (Policy, error) {
	if d <= 0 {
		return nil, &ParseError{Spec: d.String(), Msg: fmt.Sprintf("within: the duration must be positive, got %s", d)}
	}
	return within{d}, nil
}

type within struct{ d time.Duration }

func (w within) String() string { return "within " + w.d.String() }

func (w within) Apply(now time.Time, items []Item) (keep, destroy []Item) {
	return applyRule(w, now, items)
}

func (w within) reasons(now time.Time, sorted []Item) []string {
	out := make([]string, len(sorted))
	for i, it := range sorted {
		if age := now.Sub(it.Created); age < w.d {
			out[i] = fmt.Sprintf("within %s (age %s)", w.d, age.Truncate(time.Second))
		}
	}
	return out
}
