package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/blockdiff/nbd"
	"github.com/cairn-backup/cairn/internal/cli"
	"github.com/cairn-backup/cairn/internal/repocli"
	"github.com/cairn-backup/cairn/objstore"
)

// TestMain lets the tests run this test binary as cairn-block itself, for
// races between separate processes.
func TestMain(m *testing.M) {
	if os.Getenv("CAIRN_BLOCK_RUN_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// poolImage writes an image of 64 KiB blocks: the pool blocks named by idx,
// then one block of its own.
func poolImage(t *testing.T, dir string, idx []int, own uint64) (string, []byte) {
	var b bytes.Buffer
	for _, i := range idx {
		blk := make([]byte, 64<<10)
		_, _ = rand.NewChaCha8([32]byte{byte(i), 42}).Read(blk)
		b.Write(blk)
	}
	blk := make([]byte, 64<<10)
	_, _ = rand.NewChaCha8([32]byte{byte(own), byte(own >> 8), 7}).Read(blk)
	b.Write(blk)
	p := filepath.Join(dir, fmt.Sprintf("img-%d", own))
	if err := os.WriteFile(p, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p, b.Bytes()
}

// versionsJSON returns ls --json.
func (c *tcli) versions() []repocli.VersionJSON {
	c.t.Helper()
	var vs []repocli.VersionJSON
	if err := json.Unmarshal([]byte(c.ok("ls", "--json")), &vs); err != nil {
		c.t.Fatal(err)
	}
	return vs
}

// TestCLIScrubAndForcedRestore deletes an object two versions share: scrub
// exits 1 and marks both invalid, restore refuses them, and --force restores
// one once the block was backed up again.
func TestCLIScrubAndForcedRestore(t *testing.T) {
	c := newCLI(t)
	c.ok("init", "--block-size", "64K")
	dir := t.TempDir()
	src1, img1 := poolImage(t, dir, []int{1, 2}, 1)
	src2, _ := poolImage(t, dir, []int{2, 3}, 2)
	v1 := strings.TrimSpace(c.ok("backup", src1, "vol"))
	v2 := strings.TrimSpace(c.ok("backup", src2, "vol"))
	c.ok("deep-scrub", "--all")

	s, err := objstore.Open(context.Background(), c.env["CAIRN_REPO"])
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	shared := blake3Key(t, img1[64<<10:128<<10])
	if err := s.Delete(context.Background(), shared); err != nil {
		t.Fatal(err)
	}
	code, out, errs := c.run("", "scrub", "--all", "--json")
	if code != 1 {
		t.Fatalf("scrub of a damaged repository: exit %d %s", code, errs)
	}
	var rep blockdiff.ScrubReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if rep.VersionsChecked != 2 || len(rep.Failures) != 2 || rep.Failures[0].Problem != "missing" || len(rep.Marked) != 2 {
		t.Fatalf("scrub report: %s", out)
	}
	for _, v := range c.versions() {
		if v.Status != "invalid" || len(v.Damage) != 1 || v.Damage[0].Problem != "missing" {
			t.Errorf("%s is %s, damage %+v", v.ID, v.Status, v.Damage)
		}
	}
	if !strings.Contains(c.ok("ls"), "invalid") {
		t.Error("ls does not show the status")
	}
	dest := filepath.Join(t.TempDir(), "out")
	if code, _, errs := c.run("", "restore", v1, dest); code != 1 || !strings.Contains(errs, "not valid") || !strings.Contains(errs, "--force") {
		t.Fatalf("restore of an invalid version: exit %d %s", code, errs)
	}
	if code, _, _ := c.run("", "restore", "--force", v2, dest+"2"); code != 1 {
		t.Fatal("forced restore of a version with a missing block succeeded")
	}
	c.ok("backup", src1, "vol") // stores the missing block again
	c.ok("restore", "--force", v1, dest)
	if got, _ := os.ReadFile(dest); !bytes.Equal(got, img1) {
		t.Fatal("forced restore differs")
	}
	c.ok("deep-scrub", "--all", "--percent", "50")
	if code, _, _ := c.run("", "scrub"); code != 2 {
		t.Errorf("scrub without versions: exit %d", code)
	}
	if code, _, _ := c.run("", "scrub", "--all", "--percent", "200"); code != 2 {
		t.Errorf("scrub --percent 200: exit %d", code)
	}
}

// blake3Key returns the data key of an unencrypted block.
func blake3Key(t *testing.T, block []byte) string {
	t.Helper()
	r, err := blockdiff.Init(context.Background(), mustMem(t), blockdiff.InitConfig{BlockSize: 64 << 10}, blockdiff.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	v, err := r.Backup(context.Background(), blockdiff.NewSource(bytes.NewReader(block), int64(len(block))),
		blockdiff.BackupOptions{Volume: "x"})
	if err != nil {
		t.Fatal(err)
	}
	id := v.Refs()[0].ID.String()
	return "data/" + id[:2] + "/" + id
}

func mustMem(t *testing.T) objstore.Store {
	s, err := objstore.Open(context.Background(), "mem://")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestCLIEnforceCleanupStats runs the maintenance commands end to end.
func TestCLIEnforceCleanupStats(t *testing.T) {
	c := newCLI(t)
	c.ok("init", "--block-size", "64K")
	dir := t.TempDir()
	var ids []string
	for i := range 3 {
		src, _ := poolImage(t, dir, []int{1, 2}, uint64(10+i))
		ids = append(ids, strings.TrimSpace(c.ok("backup", src, "vol")))
	}
	c.ok("protect", ids[0])
	var res blockdiff.EnforceResult
	if err := json.Unmarshal([]byte(c.ok("enforce", "latest1", "--dry-run", "--json", "--volume", "vol")), &res); err != nil {
		t.Fatal(err)
	}
	v := res.Volumes[0]
	if len(v.Kept) != 1 || v.Kept[0].ID != ids[2] || len(v.Removed) != 1 || v.Removed[0].ID != ids[1] ||
		len(v.Skipped) != 1 || v.Skipped[0].Reasons[0] != "protected" {
		t.Fatalf("enforce --dry-run: %+v", res)
	}
	if out := c.ok("enforce", "latest1", "--dry-run"); !strings.Contains(out, "would remove") || !strings.Contains(out, "latest1") {
		t.Errorf("enforce --dry-run table:\n%s", out)
	}
	c.ok("enforce", "latest1")
	if vs := c.versions(); len(vs) != 2 {
		t.Fatalf("after enforce: %+v", vs)
	}
	if code, _, _ := c.run("", "enforce", "latest0"); code != 2 {
		t.Errorf("bad policy: exit %d", code)
	}
	var cl blockdiff.CleanupResult
	if err := json.Unmarshal([]byte(c.ok("cleanup", "--json")), &cl); err != nil || cl.Deleted != 0 || cl.Young != 1 {
		t.Fatalf("cleanup within the grace: %+v %v", cl, err)
	}
	if err := json.Unmarshal([]byte(c.ok("cleanup", "--grace", "0s", "--json")), &cl); err != nil || cl.Deleted != 1 {
		t.Fatalf("cleanup: %+v %v", cl, err)
	}
	var st blockdiff.StorageStats
	if err := json.Unmarshal([]byte(c.ok("storage-stats", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Versions != 2 || st.Objects != 4 || st.DedupRatio != 1.5 || st.UnreferencedObjects != 0 {
		t.Fatalf("storage-stats: %+v", st)
	}
	if out := c.ok("storage-stats"); !strings.Contains(out, "dedup ratio") {
		t.Errorf("storage-stats:\n%s", out)
	}
	if out := c.ok("locks", "--json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("locks: %s", out)
	}
	c.ok("unlock")
}

// TestCLIProcessRace runs four backup processes at a time, a cleanup with no
// grace and enforce in loops, as separate processes on a file repository:
// afterwards the deep scrub is clean and every version restores.
func TestCLIProcessRace(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	repo := "file://" + t.TempDir()
	dir := t.TempDir()
	cairn := func(args ...string) (string, string, error) {
		cmd := exec.Command(exe, append([]string{"--repo", repo, "--lock-ttl", "5s", "--lock-wait", "2m", "--log-level", "warn"}, args...)...)
		cmd.Env = append(os.Environ(), "CAIRN_BLOCK_RUN_MAIN=1")
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		return out.String(), errb.String(), err
	}
	if _, errs, err := cairn("init", "--block-size", "64K"); err != nil {
		t.Fatalf("init: %v %s", err, errs)
	}
	var mu sync.Mutex
	want := map[string][]byte{}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 3))
			for i := range 4 {
				src, img := poolImage(t, dir, []int{rng.IntN(10), rng.IntN(10), rng.IntN(10)}, uint64(100*w+i))
				out, errs, err := cairn("backup", src, fmt.Sprintf("vol%d", w))
				if err != nil {
					t.Errorf("backup: %v %s", err, errs)
					return
				}
				mu.Lock()
				want[strings.TrimSpace(out)] = img
				mu.Unlock()
			}
		})
	}
	stop := make(chan struct{})
	var bg sync.WaitGroup
	var cleanups, deleted int
	for _, job := range [][]string{{"cleanup", "--grace", "0s", "--json"}, {"enforce", "latest2"}} {
		bg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				out, errs, err := cairn(job...)
				if err != nil {
					t.Errorf("%v: %v %s", job, err, errs)
					return
				}
				if job[0] == "cleanup" {
					var res blockdiff.CleanupResult
					_ = json.Unmarshal([]byte(out), &res)
					cleanups++
					deleted += res.Deleted
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	bg.Wait()
	if t.Failed() {
		return
	}
	t.Logf("%d cleanup processes ran beside the backups and deleted %d objects", cleanups, deleted)
	if cleanups < 2 || deleted == 0 {
		t.Errorf("the race did not exercise cleanup: %d runs, %d objects deleted", cleanups, deleted)
	}
	if _, errs, err := cairn("deep-scrub", "--all"); err != nil {
		t.Fatalf("deep-scrub after the race: %v %s", err, errs)
	}
	out, _, err := cairn("ls", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []repocli.VersionJSON
	if err := json.Unmarshal([]byte(out), &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) < 8 {
		t.Fatalf("%d versions left", len(vs))
	}
	for _, v := range vs {
		dest := filepath.Join(t.TempDir(), "r")
		if _, errs, err := cairn("restore", v.ID, dest); err != nil {
			t.Fatalf("restore %s: %v %s", v.ID, err, errs)
		}
		if got, _ := os.ReadFile(dest); !bytes.Equal(got, want[v.ID]) {
			t.Errorf("version %s differs", v.ID)
		}
	}
}

// TestCLINBDQemu serves a real backup over NBD and reads it with qemu-img
// and qemu-nbd --list.
func TestCLINBDQemu(t *testing.T) {
	qemuImg := lookTool(t, "qemu-img")
	c := newCLI(t)
	c.ok("init", "--block-size", "64K")
	src, img := image(t, 20*65536+1234, 5) // a zero stretch and an unaligned tail
	id := strings.TrimSpace(c.ok("backup", src, "vol"))
	s, err := objstore.Open(context.Background(), c.env["CAIRN_REPO"])
	if err != nil {
		t.Fatal(err)
	}
	r, err := blockdiff.Open(context.Background(), s, blockdiff.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	a := &app{}
	a.IO, a.LogLevel, a.LogFormat = cli.IO{Err: os.Stderr}, "info", "text"
	_ = a.App.Setup()
	go func() { done <- nbd.ServeVersions(ctx, l, r, blockdiff.ReaderOptions{CacheBlocks: 2}, a.Log) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	out := filepath.Join(t.TempDir(), "out.img")
	if b, err := exec.Command(qemuImg, "convert", "-f", "raw", "-O", "raw", "nbd://"+l.Addr().String()+"/"+id, out).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v %s", err, b)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	// qemu-img writes whole 512-byte sectors: the tail past the export is zeros.
	if len(got) != (len(img)+511)/512*512 || !bytes.Equal(got[:len(img)], img) || !bytes.Equal(got[len(img):], make([]byte, len(got)-len(img))) {
		t.Fatalf("bytes read over NBD differ (%d bytes, want %d)", len(got), len(img))
	}
	if qemuNbd, err := exec.LookPath("qemu-nbd"); err == nil {
		host, port, _ := net.SplitHostPort(l.Addr().String())
		b, err := exec.Command(qemuNbd, "--list", "-b", host, "-p", port).CombinedOutput()
		if err != nil || !strings.Contains(string(b), "export: '"+id+"'") {
			t.Fatalf("qemu-nbd --list: %v %s", err, b)
		}
	}
	if b, err := exec.Command(qemuImg, "info", "nbd://"+l.Addr().String()+"/nope").CombinedOutput(); err == nil {
		t.Fatalf("unknown export opened: %s", b)
	}
}

// lookTool finds a client program: skipped when absent on a developer's
// machine, a failure under CI (which installs qemu-utils).
func lookTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		msg := name + " not found (apt-get install qemu-utils)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

// TestCLIKilledBackupProcess kills a backup process after it stored some
// blocks: its lock blocks cleanup until it goes stale, its orphans survive
// while younger than the grace period and go after it, and unlock removes
// the stale lock. (Seconds stand for the hour of production here.)
func TestCLIKilledBackupProcess(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	repo := "file://" + root
	command := func(args ...string) *exec.Cmd {
		cmd := exec.Command(exe, append([]string{"--repo", repo, "--lock-ttl", "2s", "--log-level", "warn"}, args...)...)
		cmd.Env = append(os.Environ(), "CAIRN_BLOCK_RUN_MAIN=1")
		return cmd
	}
	cairn := func(args ...string) (string, error) {
		var out, errb bytes.Buffer
		cmd := command(args...)
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		if err != nil {
			err = fmt.Errorf("%v: %w: %s", args, err, errb.String())
		}
		return out.String(), err
	}
	if _, err := cairn("init", "--block-size", "64K"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keepSrc, keepImg := poolImage(t, dir, []int{1, 2}, 1)
	keep, err := cairn("backup", keepSrc, "vol")
	if err != nil {
		t.Fatal(err)
	}
	countData := func() int {
		n := 0
		_ = filepath.Walk(filepath.Join(root, "data"), func(_ string, fi os.FileInfo, _ error) error {
			if fi != nil && fi.Mode().IsRegular() && !strings.HasPrefix(fi.Name(), ".") { // not a killed Put's temp file
				n++
			}
			return nil
		})
		return n
	}
	before := countData()

	big := make([]byte, 600*64<<10) // random blocks: every one a new object
	_, _ = rand.NewChaCha8([32]byte{99}).Read(big)
	bigSrc := filepath.Join(dir, "big")
	if err := os.WriteFile(bigSrc, big, 0o600); err != nil {
		t.Fatal(err)
	}
	victim := command("backup", bigSrc, "vol")
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for countData() < before+5 {
		if time.Now().After(deadline) {
			_ = victim.Process.Kill()
			t.Fatal("the backup stored nothing within 30s")
		}
		time.Sleep(time.Millisecond)
	}
	_ = victim.Process.Kill()
	_ = victim.Wait()
	orphans := countData() - before
	if orphans >= 600 {
		t.Skip("the backup finished before the kill")
	}
	if _, err := cairn("cleanup", "--grace", "0s", "--lock-wait", "100ms"); err == nil || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("cleanup beside the killed backup's live lock: %v", err)
	}
	time.Sleep(2500 * time.Millisecond) // the lock goes stale
	var res blockdiff.CleanupResult
	out, err := cairn("cleanup", "--grace", "1h", "--json")
	if err != nil || json.Unmarshal([]byte(out), &res) != nil || res.Deleted != 0 || res.Young < orphans {
		t.Fatalf("cleanup within the grace: %v %s", err, out)
	}
	out, err = cairn("cleanup", "--grace", "1s", "--json")
	if err != nil || json.Unmarshal([]byte(out), &res) != nil || res.Deleted < orphans || res.MarkedAbandoned != 1 {
		t.Fatalf("cleanup after the grace: %v %s (orphans: %d)", err, out, orphans)
	}
	if n := countData(); n != before {
		t.Fatalf("%d data objects left, want %d", n, before)
	}
	if out, err := cairn("unlock"); err != nil || !strings.Contains(out, "removed") {
		t.Fatalf("unlock of the stale lock: %v %q", err, out)
	}
	if _, err := cairn("deep-scrub", "--all"); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "r")
	if _, err := cairn("restore", strings.TrimSpace(keep), dest); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(dest); !bytes.Equal(got, keepImg) {
		t.Fatal("the kept version differs")
	}
}
