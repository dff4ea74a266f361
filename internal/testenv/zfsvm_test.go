package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestGuestArgsDropsHostPaths(t *testing.T) {
	in := []string{"-test.paniconexit0", "-test.timeout=10m0s", "-test.v=true",
		"-test.testlogfile=/tmp/go-build1/testlog.txt", "-test.run", "^TestX$",
		"-test.coverprofile", "/tmp/c.out", "--test.cpuprofile=/tmp/cpu", "-test.count=1"}
	want := []string{"-test.paniconexit0", "-test.timeout=10m0s", "-test.v=true",
		"-test.run", "^TestX$", "-test.count=1"}
	if got := guestArgs(in); !reflect.DeepEqual(got, want) {
		t.Fatalf("guestArgs:\n got %q\nwant %q", got, want)
	}
}

func TestFlagValue(t *testing.T) {
	args := []string{"-test.v", "-test.run", "A|B", "-test.timeout=3m", "-test.list=false"}
	for _, c := range []struct {
		name, val string
		found     bool
	}{
		{"v", "true", true}, {"run", "A|B", true}, {"timeout", "3m", true},
		{"list", "false", true}, {"count", "", false},
	} {
		v, ok := flagValue(args, c.name)
		if v != c.val || ok != c.found {
			t.Errorf("flagValue(%s) = %q, %v; want %q, %v", c.name, v, ok, c.val, c.found)
		}
	}
	if !hasFlag(args, "v") || hasFlag(args, "list") || hasFlag(args, "count") {
		t.Error("hasFlag: want v set, list and count unset")
	}
	if !hasFlag([]string{"-test.v=test2json"}, "v") {
		t.Error("hasFlag: -test.v=test2json is verbose")
	}
}

func TestGuestTimeout(t *testing.T) {
	t.Setenv("ZFSVM_TIMEOUT", "")
	if got := guestTimeout([]string{"-test.timeout=10m0s"}); got != 15*time.Minute {
		t.Errorf("guestTimeout(10m) = %v, want 15m", got)
	}
	if got := guestTimeout(nil); got != 2*time.Hour {
		t.Errorf("guestTimeout() = %v, want 2h", got)
	}
	t.Setenv("ZFSVM_TIMEOUT", "90")
	if got := guestTimeout([]string{"-test.timeout=10m0s"}); got != 90*time.Second {
		t.Errorf("guestTimeout with ZFSVM_TIMEOUT=90 = %v", got)
	}
}

// TestGuestScriptQuoting runs the generated script with sh, with the test
// binary replaced by a printer of its arguments.
func TestGuestScriptQuoting(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	t.Setenv("CI", "it's true")
	t.Setenv("CAIRN_SOMETHING", `a "b" $c`)
	args := []string{"-test.run", `^Test(A|B)$`, "-test.v=true", "it's"}
	script := guestScript("pkg.test", args)
	dir := t.TempDir()
	printer := filepath.Join(dir, "printargs")
	if err := os.WriteFile(printer, []byte("#!/bin/sh\nfor a; do printf '%s\\n' \"$a\"; done\n"+
		"printf '%s\\n' \"$CAIRN_IN_ZFSVM\" \"$CI\" \"$CAIRN_SOMETHING\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	script = strings.Replace(script, "cd /mnt/host/pkg || exit 125", "cd "+dir, 1)
	script = strings.Replace(script, "/mnt/host/pkg.test", printer, 1)
	out, err := exec.Command("sh", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("sh: %v\n%s\nscript:\n%s", err, out, script)
	}
	want := append(append([]string{}, args...), "1", "it's true", `a "b" $c`)
	if got := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n"); !reflect.DeepEqual(got, want) {
		t.Fatalf("guest script ran with\n got %q\nwant %q\nscript:\n%s", got, want, script)
	}
}

func TestConsoleFilter(t *testing.T) {
	in := "zfsvm: zfs-2.3.2 loaded at 3.1s\r\n=== RUN   TestX\r\n\x16--- PASS: TestX (0.01s)\r\r\nPASS\r\nzfsvm: run.sh exited 0 at 9.0s\r\nZFSVM_RC=0\r\n[   20.375221] reboot: Power down\r\npartial"
	for _, verbose := range []bool{false, true} {
		var b strings.Builder
		f := &consoleFilter{out: &b, verbose: verbose}
		if err := f.copy(strings.NewReader(in)); err != nil {
			t.Fatal(err)
		}
		want := "=== RUN   TestX\n\x16--- PASS: TestX (0.01s)\nPASS\npartial\n"
		if verbose {
			want = "zfsvm: zfs-2.3.2 loaded at 3.1s\n" + want[:len(want)-len("partial\n")] +
				"zfsvm: run.sh exited 0 at 9.0s\n[   20.375221] reboot: Power down\npartial\n"
		}
		if b.String() != want {
			t.Errorf("verbose=%v:\n got %q\nwant %q", verbose, b.String(), want)
		}
		if !verbose && len(f.held) != 3 {
			t.Errorf("held %d init and kernel lines, want 3", len(f.held))
		}
	}
}

func TestCopyPackageFiles(t *testing.T) {
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "pkg")
	for name, body := range map[string]string{
		"a_test.go": "package a", "golden.txt": "g", "testdata/x/y.bin": "y", "sub/skip.go": "package sub",
	} {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := copyPackageFiles(src, dst); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a_test.go", "golden.txt", "testdata/x/y.bin"} {
		if _, err := os.Stat(filepath.Join(dst, name)); err != nil {
			t.Errorf("not copied: %v", err)
		}
	}
	if _, err := os.Stat(filepath.Join(dst, "sub")); err == nil {
		t.Error("sub-package directory copied")
	}
}

func TestZFSSkipsOnHost(t *testing.T) {
	if InZFSVM() {
		t.Skip("inside the guest")
	}
	t.Setenv("CI", "")
	var msg string
	ok := t.Run("probe", func(t *testing.T) {
		defer func() { msg = "ran" }()
		ZFS(t)
		t.Error("ZFS(t) returned on the host")
	})
	if !ok || msg != "ran" {
		t.Fatalf("ZFS(t) on the host should skip the test")
	}
}
