package blockdiff

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
)

// Extent is a changed range of a volume since the base version, as
// `rbd diff --format=json` reports it.
type Extent struct {
	Offset int64
	Length int64
	Exists bool // false: the range was discarded (reads as zeros)
}

// rbdExtent is one element of rbd diff's JSON array. rbd prints exists as the
// string "true" or "false"; a JSON boolean is accepted too.
type rbdExtent struct {
	Offset *int64           `json:"offset"`
	Length *int64           `json:"length"`
	Exists *json.RawMessage `json:"exists"`
}

// ParseRBDDiff reads hints in the format of `rbd diff --format=json`:
// [{"offset":0,"length":4194304,"exists":"true"}, ...]. The result is sorted
// by offset and never nil, so an empty diff means "nothing changed".
func ParseRBDDiff(r io.Reader) ([]Extent, error) {
	var raw []rbdExtent
	dec := json.NewDecoder(io.LimitReader(r, 1<<30))
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("blockdiff: hints: not an rbd diff JSON array: %w", err)
	}
	out := make([]Extent, 0, len(raw))
	for i, e := range raw {
		if e.Offset == nil || e.Length == nil || e.Exists == nil {
			return nil, fmt.Errorf("blockdiff: hints: element %d lacks offset, length or exists", i)
		}
		if *e.Offset < 0 || *e.Length < 0 || *e.Offset > 1<<62-*e.Length {
			return nil, fmt.Errorf("blockdiff: hints: element %d: bad extent %d+%d", i, *e.Offset, *e.Length)
		}
		exists, err := parseExists(*e.Exists)
		if err != nil {
			return nil, fmt.Errorf("blockdiff: hints: element %d: %w", i, err)
		}
		out = append(out, Extent{Offset: *e.Offset, Length: *e.Length, Exists: exists})
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].Offset < out[b].Offset })
	return out, nil
}

// parseExists accepts "true"/"false" (what rbd prints) and JSON booleans.
func parseExists(m json.RawMessage) (bool, error) {
	var s string
	if json.Unmarshal(m, &s) == nil {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return false, fmt.Errorf("exists %q is not true or false", s)
		}
		return b, nil
	}
	var b bool
	if err := json.Unmarshal(m, &b); err != nil {
		return false, fmt.Errorf("exists %s is not true or false", m)
	}
	return b, nil
}
