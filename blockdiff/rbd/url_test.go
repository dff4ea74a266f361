package rbd

import (
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	for _, c := range []struct {
		in   string
		want URL
		ok   bool
	}{
		{"rbd://rbd/vol", URL{Pool: "rbd", Image: "vol"}, true},
		{"rbd://rbd/vol@b-20260101T000000Z", URL{Pool: "rbd", Image: "vol", Snapshot: "b-20260101T000000Z"}, true},
		{"rbd://rbd/ns/vol@s", URL{Pool: "rbd", Namespace: "ns", Image: "vol", Snapshot: "s"}, true},
		{"rbd://rbd/csi-vol-1234-abcd", URL{Pool: "rbd", Image: "csi-vol-1234-abcd"}, true},
		{"rbd://rbd", URL{}, false},
		{"rbd://rbd/", URL{}, false},
		{"rbd:///vol", URL{}, false},
		{"rbd://rbd//vol", URL{}, false},
		{"rbd://a/b/c/d", URL{}, false},
		{"rbd://rbd/vol@", URL{}, false},
		{"rbd://rbd/vol@a/b", URL{}, false},
		{"rbd://rbd/v\nol", URL{}, false},
		{"file:///dev/sda", URL{}, false},
		{"rbd:/rbd/vol", URL{}, false},
	} {
		got, err := ParseURL(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v ok=%v", c.in, got, err, c.want, c.ok)
		}
		if c.ok && got.String() != c.in {
			t.Errorf("ParseURL(%q).String() = %q", c.in, got.String())
		}
	}
}

// FuzzParseURL: no input panics, and an accepted URL prints back as a URL
// that parses to the same value.
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{"rbd://rbd/vol", "rbd://p/ns/i@s", "rbd://p/i@s@t", "rbd://@/", "rbd://p/i@"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseURL(s)
		if err != nil {
			return
		}
		if u.Pool == "" || u.Image == "" || strings.ContainsAny(u.Pool+u.Namespace+u.Image, "/@") {
			t.Fatalf("ParseURL(%q) = %+v", s, u)
		}
		u2, err := ParseURL(u.String())
		if err != nil || u2 != u {
			t.Fatalf("round trip of %q: %+v -> %q -> %+v, %v", s, u, u.String(), u2, err)
		}
	})
}
