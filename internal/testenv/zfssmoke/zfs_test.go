// Package zfssmoke is the smoke test of the OpenZFS VM: its tests run inside
// the guest (see testenv.RunInZFSVM).
package zfssmoke

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.RunInZFSVM(m)) }

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestSmokeZFSSendRecv sends a snapshot with zfs send | zfs recv, full then
// incremental, and checks that the received snapshots keep their GUIDs.
func TestSmokeZFSSendRecv(t *testing.T) {
	pool := testenv.ZPool(t, "smoke")
	t.Logf("%s", run(t, "zfs", "version"))
	run(t, "zfs", "create", pool+"/src")
	if err := os.WriteFile("/"+pool+"/src/f1", []byte("first\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "zfs", "snapshot", pool+"/src@s1")
	run(t, "sh", "-c", "zfs send "+pool+"/src@s1 | zfs recv -u "+pool+"/dst")
	if err := os.WriteFile("/"+pool+"/src/f2", []byte("second\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "zfs", "snapshot", pool+"/src@s2")
	run(t, "sh", "-c", "zfs send -i @s1 "+pool+"/src@s2 | zfs recv -u "+pool+"/dst")
	for _, s := range []string{"@s1", "@s2"} {
		src := run(t, "zfs", "get", "-Hp", "-o", "value", "guid", pool+"/src"+s)
		dst := run(t, "zfs", "get", "-Hp", "-o", "value", "guid", pool+"/dst"+s)
		if src == "" || src != dst {
			t.Errorf("guid of %s: sent %q, received %q", s, src, dst)
		}
		t.Logf("%s guid %s", s, src)
	}
}
