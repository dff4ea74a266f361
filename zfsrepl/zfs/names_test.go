package zfs

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateFilesystem(t *testing.T) {
	good := []string{"pool", "pool/a", "wdc/zrepl/garage", "p/a.b/c-d_e:f", "p/with space"}
	for _, n := range good {
		if err := ValidateFilesystem(n); err != nil {
			t.Errorf("ValidateFilesystem(%q) = %v, want nil", n, err)
		}
	}
	bad := []string{"", "/pool", "pool/", "pool//a", "pool/..", "pool/../x", "pool/.", "pool@s", "pool#b",
		"pool/a\x00", "pool/a\n", "pool/a\tb", "1pool", "-o", "pool/ä", strings.Repeat("a", 256), "pool/a/%"}
	for _, n := range bad {
		err := ValidateFilesystem(n)
		if err == nil {
			t.Errorf("ValidateFilesystem(%q) = nil, want error", n)
		} else if !errors.Is(err, ErrInvalidName) {
			t.Errorf("ValidateFilesystem(%q) = %v, does not wrap ErrInvalidName", n, err)
		}
	}
}

func TestValidateRelativePath(t *testing.T) {
	if err := ValidateRelativePath("1pool/a"); err != nil {
		t.Errorf("relative path may start with a digit: %v", err)
	}
	for _, n := range []string{"..", "../x", "a/../../b", "/abs", "a@b", "a#b", "a\x7f"} {
		if ValidateRelativePath(n) == nil {
			t.Errorf("ValidateRelativePath(%q) = nil, want error", n)
		}
	}
}

func TestParseVersionName(t *testing.T) {
	fs, typ, name, err := ParseVersionName("pool/a@zrepl_20240101_000000_000")
	if err != nil || fs != "pool/a" || typ != Snapshot || name != "zrepl_20240101_000000_000" {
		t.Fatalf("got %q %q %q %v", fs, typ, name, err)
	}
	fs, typ, name, err = ParseVersionName("pool/a#zrepl_CURSOR_G_00000000000000ff_J_push")
	if err != nil || fs != "pool/a" || typ != Bookmark || name != "zrepl_CURSOR_G_00000000000000ff_J_push" {
		t.Fatalf("got %q %q %q %v", fs, typ, name, err)
	}
	for _, n := range []string{"pool/a", "pool/a@", "pool/a@b@c", "pool/a@b#c", "pool/a@b/c", "@s", "pool/a@..", "pool/a@-\n"} {
		if _, _, _, err := ParseVersionName(n); err == nil {
			t.Errorf("ParseVersionName(%q) accepted", n)
		}
	}
}

func TestValidateHoldTag(t *testing.T) {
	if err := ValidateHoldTag("zrepl_STEP_J_push"); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"", "-r", "a\nb", strings.Repeat("x", 300)} {
		if ValidateHoldTag(n) == nil {
			t.Errorf("ValidateHoldTag(%q) accepted", n)
		}
	}
}

func TestSendArgs(t *testing.T) {
	args, err := SendArgs{From: "p/a#b", To: "p/a@s2", Raw: true}.args()
	if err != nil || strings.Join(args, " ") != "send -w -i p/a#b p/a@s2" {
		t.Fatalf("got %v %v", args, err)
	}
	for _, a := range []SendArgs{{To: "p/a"}, {From: "p/b@s1", To: "p/a@s2"}, {ResumeToken: "1-x"}, {ResumeToken: "1-ab", To: "p/a@s"}} {
		if _, err := a.args(); err == nil {
			t.Errorf("%+v accepted", a)
		}
	}
}

func TestParseResumeOutput(t *testing.T) {
	out := `resume token contents:
nvlist version: 0
	fromguid = 0x1f
	object = 0x2
	offset = 0x1000
	bytes = 0x20000
	toguid = 0xa3c2b0e6d0f1c2d3
	toname = tank/src@s2
	compressok = 1
	rawok = 1
full send of tank/src@s2 estimated size is 30.0M
`
	ri, err := parseResumeOutput("1-abc", out)
	if err != nil {
		t.Fatal(err)
	}
	if ri.ToGUID != 0xa3c2b0e6d0f1c2d3 || ri.FromGUID != 0x1f || ri.ToName != "tank/src@s2" || !ri.Raw {
		t.Fatalf("got %+v", ri)
	}
	if _, err := parseResumeOutput("1-abc", "garbage"); err == nil {
		t.Fatal("garbage accepted")
	}
}

// FuzzNames checks that the validators never panic and that whatever they
// accept cannot escape a root: no "..", no '@'/'#', not absolute, no control
// characters.
func FuzzNames(f *testing.F) {
	for _, s := range []string{"pool/a", "../x", "a@b", "p/a#c", "/abs", "a\x00b", "a/./b", "p/a@s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		errRel := ValidateRelativePath(s)
		errFS := ValidateFilesystem(s)
		_, _, _, errV := ParseVersionName(s)
		_ = ValidateHoldTag(s)
		if errFS == nil && errRel != nil {
			t.Fatalf("%q: valid filesystem but invalid relative path", s)
		}
		if errRel == nil {
			for _, comp := range strings.Split(s, "/") {
				if comp == ".." || comp == "." || comp == "" {
					t.Fatalf("%q accepted with component %q", s, comp)
				}
			}
			if strings.ContainsAny(s, "@#") || strings.HasPrefix(s, "/") {
				t.Fatalf("%q accepted", s)
			}
			for _, c := range []byte(s) {
				if c < 0x20 || c >= 0x7f {
					t.Fatalf("%q accepted with byte %#x", s, c)
				}
			}
		}
		if errV == nil && strings.Count(s, "@")+strings.Count(s, "#") != 1 {
			t.Fatalf("version %q accepted", s)
		}
	})
}
