package retention

import (
	"fmt"
	"regexp"
	"time"
)

// compileRegex compiles a rule's name filter; "" matches everything.
func compileRegex(regex string) (*regexp.Regexp, error) {
	re, err := regexp.Compile(regex)
	if err != nil {
		return nil, &ParseError{Spec: regex, Msg: fmt.Sprintf("bad regex: %v", err)}
	}
	return re, nil
}

// LastN returns zrepl's last_n rule: it keeps the count youngest items whose
// name matches regex ("" matches everything), ties in time broken by name,
// descending. Items that do not match are not kept by this rule. (zrepl also
// keeps every item when count exceeds the number of all items, matching or
// not; cairn does not, so a regex always restricts the rule.)
func LastN(count int, regex string) (Policy, error) {
	if count <= 0 {
		return nil, &ParseError{Spec: fmt.Sprint(count), Msg: fmt.Sprintf("last_n count must be positive, got %d", count)}
	}
	re, err := compileRegex(regex)
	if err != nil {
		return nil, err
	}
	return lastN{count, re}, nil
}

type lastN struct {
	count int
	re    *regexp.Regexp
}

func (l lastN) String() string { return fmt.Sprintf("last_n %d %q", l.count, l.re) }

func (l lastN) Apply(now time.Time, items []Item) (keep, destroy []Item) {
	return applyRule(l, now, items)
}

func (l lastN) reasons(_ time.Time, sorted []Item) []string {
	out := make([]string, len(sorted))
	n := 0
	for i, it := range sorted {
		if n < l.count && l.re.MatchString(it.Name) {
			n++
			out[i] = fmt.Sprintf("last_n %d (#%d)", l.count, n)
		}
	}
	return out
}

// Regex returns zrepl's regex rule: it keeps the items whose name matches
// regex, or with negate those whose name does not.
func Regex(regex string, negate bool) (Policy, error) {
	re, err := compileRegex(regex)
	if err != nil {
		return nil, err
	}
	return regexRule{re, negate}, nil
}

type regexRule struct {
	re     *regexp.Regexp
	negate bool
}

func (r regexRule) String() string {
	if r.negate {
		return fmt.Sprintf("regex !%q", r.re)
	}
	return fmt.Sprintf("regex %q", r.re)
}

func (r regexRule) Apply(now time.Time, items []Item) (keep, destroy []Item) {
	return applyRule(r, now, items)
}

func (r regexRule) reasons(_ time.Time, sorted []Item) []string {
	out := make([]string, len(sorted))
	for i, it := range sorted {
		if r.re.MatchString(it.Name) != r.negate {
			out[i] = r.String()
		}
	}
	return out
}
