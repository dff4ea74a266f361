// Package reliability holds the reliability suite of issue 19: the real
// cairn-block binary runs backups, cleanups and enforces against the real S3
// server (radosgw of scripts/testenv) through a fault proxy that fails about
// 10% of the requests, and is SIGKILLed at random points over many rounds.
// Afterwards every valid version must restore byte for byte and a deep scrub
// must pass. TestKilledFileRepository does the same on a file repository
// (no server, no proxy).
//
//	go test ./internal/reliability/                 # 12 rounds, under a minute
//	go test ./internal/reliability/ -rounds 50 -v   # longer
package reliability

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/internal/faultproxy"
	"github.com/cairn-backup/cairn/internal/testenv"
	"github.com/cairn-backup/cairn/objstore"
	_ "github.com/cairn-backup/cairn/objstore/s3" // registers s3://
)

var (
	rounds    = flag.Int("rounds", 0, "rounds of the reliability suite (default 12, 3 with -short)")
	faultRate = flag.Float64("fault-rate", 0.10, "share of S3 requests the fault proxy fails")
)

const (
	blockSize = 64 << 10
	blocks    = 24 // per image: 1.5 MiB
	password  = "reliability"
	volumes   = 2
)

// image is the content of volume vol at round r: each block changes every
// few rounds (block i every i%4+1 rounds), and two blocks are zero.
func image(vol, r int) []byte {
	b := make([]byte, blocks*blockSize)
	for i := range blocks {
		if i%11 == 5 {
			continue // sparse
		}
		gen := r / (i%4 + 1)
		rng := rand.NewChaCha8([32]byte{byte(vol), byte(i), byte(gen), byte(gen >> 8), 19})
		_, _ = rng.Read(b[i*blockSize : (i+1)*blockSize])
	}
	return b
}

// buildBinary builds cmd/cairn-block; the working tree is shared with other
// engineers, so a broken build is retried a few times.
func buildBinary(t *testing.T) string {
	bin := filepath.Join(t.TempDir(), "cairn-block")
	var out []byte
	var err error
	for attempt := range 4 {
		if attempt > 0 {
			t.Logf("build failed, retrying in 20s:\n%s", out)
			time.Sleep(20 * time.Second)
		}
		cmd := exec.Command("go", "build", "-o", bin, "github.com/cairn-backup/cairn/cmd/cairn-block")
		if out, err = cmd.CombinedOutput(); err == nil {
			return bin
		}
	}
	t.Fatalf("go build cmd/cairn-block: %v\n%s", err, out)
	return ""
}

// run is one cairn-block process.
type run struct {
	name   string
	vol    int // of a backup
	cmd    *exec.Cmd
	out    bytes.Buffer // stderr (and stdout for must)
	stdout bytes.Buffer
	killed bool
	err    error
}

// suite holds what the rounds share.
type suite struct {
	t     *testing.T
	bin   string
	env   []string
	flags []string // after the command name, on every command
	dir   string
	kills int
	exits map[string]int   // by command and outcome, for the log
	done  map[int][]string // versions of the backups that succeeded, by volume, oldest first
}

func (s *suite) command(name string, args ...string) *run {
	r := &run{name: name}
	args = append(append([]string{args[0]}, s.flags...), args[1:]...)
	r.cmd = exec.Command(s.bin, args...)
	r.cmd.Env = s.env
	r.cmd.Stdout, r.cmd.Stderr = &r.stdout, &r.out
	return r
}

// must runs a command that has to succeed (used without faults).
func (s *suite) must(args ...string) string {
	s.t.Helper()
	r := s.command(args[0], args...)
	if err := r.cmd.Run(); err != nil {
		s.t.Fatalf("cairn-block %s: %v\n%s", strings.Join(args, " "), err, r.out.String())
	}
	return r.stdout.String()
}

// round starts the backups of every volume, an enforce and a cleanup at
// once, and SIGKILLs each with probability killP at a random moment.
func (s *suite) round(n int, rng *rand.Rand, killP float64) {
	var runs []*run
	for vol := range volumes {
		src := filepath.Join(s.dir, fmt.Sprintf("vol%d-r%d.img", vol, n))
		if err := os.WriteFile(src, image(vol, n), 0o600); err != nil {
			s.t.Fatal(err)
		}
		r := s.command("backup", "backup", "--label", "round="+strconv.Itoa(n), src, fmt.Sprintf("vol%d", vol))
		r.vol = vol
		runs = append(runs, r)
	}
	runs = append(runs, s.command("enforce", "enforce", "latest3"))
	runs = append(runs, s.command("cleanup", "cleanup", "--grace", "0"))
	var wg sync.WaitGroup
	for _, r := range runs {
		if err := r.cmd.Start(); err != nil {
			s.t.Fatal(err)
		}
		var killAt time.Duration
		if rng.Float64() < killP {
			killAt = 5*time.Millisecond + time.Duration(rng.Int64N(int64(1500*time.Millisecond)))
		}
		wg.Go(func() {
			done := make(chan error, 1)
			go func() { done <- r.cmd.Wait() }()
			if killAt > 0 {
				select {
				case r.err = <-done:
					return
				case <-time.After(killAt):
					if r.cmd.Process.Kill() == nil {
						r.killed = true
					}
				}
			}
			select {
			case r.err = <-done:
			case <-time.After(3 * time.Minute):
				_ = r.cmd.Process.Kill()
				r.err = <-done
				s.t.Errorf("round %d: %s hung for 3 minutes:\n%s", n, r.name, r.out.String())
			}
		})
	}
	wg.Wait()
	for _, r := range runs {
		outcome := "ok"
		switch {
		case r.killed && r.err != nil:
			outcome = "killed"
			s.kills++
		case r.err != nil:
			outcome = "failed"
			if code := exitCode(r.err); code == 2 {
				s.t.Errorf("round %d: %s: usage error:\n%s", n, r.name, r.out.String())
			}
			s.t.Logf("round %d: %s failed (%v): %s", n, r.name, r.err, lastLine(r.out.String()))
		}
		s.exits[r.name+" "+outcome]++
		if r.name == "backup" && outcome == "ok" {
			s.done[r.vol] = append(s.done[r.vol], strings.TrimSpace(r.stdout.String()))
		}
	}
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// TestKilledUnderFaults is the suite: see the package documentation.
func TestKilledUnderFaults(t *testing.T) {
	env := testenv.S3(t)
	n := *rounds
	if n == 0 {
		n = 12
		if testing.Short() {
			n = 3
		}
	}
	bin := buildBinary(t)
	proxy, err := faultproxy.New(env.Endpoint, faultproxy.Config{Rate: 0})
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	bucket := fmt.Sprintf("cairn-reliability-%d", time.Now().UnixNano())
	q := url.Values{"endpoint": {proxy.URL}, "region": {env.Region}, "path_style": {"true"}}
	repoURL := "s3://" + bucket + "/repo?" + q.Encode()
	q.Set("endpoint", env.Endpoint)
	directURL := "s3://" + bucket + "/repo?" + q.Encode()

	s := &suite{t: t, bin: bin, dir: t.TempDir(), exits: map[string]int{}, done: map[int][]string{}, env: []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"CAIRN_REPO=" + repoURL, "CAIRN_PASSWORD=" + password,
		"AWS_ACCESS_KEY_ID=" + env.AccessKey, "AWS_SECRET_ACCESS_KEY=" + env.SecretKey, "AWS_REGION=" + env.Region,
		"AWS_EC2_METADATA_DISABLED=true",
	}}
	// A short lock TTL, so that the locks of killed processes go stale
	// within a round; a lock wait that outlasts them.
	s.flags = []string{"--lock-ttl", "8s", "--lock-wait", "60s", "--log-level", "warn"}
	s.must("init", "--create-bucket", "--encrypt", "--block-size", "64K")
	defer emptyBucket(t, directURL)

	proxy.Set(faultproxy.Config{Rate: *faultRate, SlowDelay: 300 * time.Millisecond})
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 19))
	t.Logf("seed-independent images; %d rounds, fault rate %.0f%%", n, *faultRate*100)
	start := time.Now()
	for i := range n {
		s.round(i, rng, 0.6)
	}
	proxy.Set(faultproxy.Config{Rate: 0})
	faults, clean := proxy.Counts()
	var nFaults int64
	for _, c := range faults {
		nFaults += c
	}
	t.Logf("%d rounds in %s: %d SIGKILLs, %d injected faults (%v) of %d requests; outcomes %v",
		n, time.Since(start).Round(time.Second), s.kills, nFaults, faults, nFaults+clean, s.exits)
	if nFaults == 0 {
		t.Error("the proxy injected no fault")
	}

	verify(t, directURL, s)
}

// TestKilledFileRepository is the suite on a file repository (no proxy:
// the store is the local file system): SIGKILLs at random moments leave at
// worst temporary files of the fs backend, which no reader sees, and every
// valid version restores.
func TestKilledFileRepository(t *testing.T) {
	n := max(*rounds/2, 6)
	if testing.Short() {
		n = 2
	}
	dir := t.TempDir()
	repoURL := "file://" + filepath.Join(dir, "repo")
	s := &suite{t: t, bin: buildBinary(t), dir: t.TempDir(), exits: map[string]int{}, done: map[int][]string{}, env: []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "CAIRN_REPO=" + repoURL, "CAIRN_PASSWORD=" + password,
	}}
	s.flags = []string{"--lock-ttl", "8s", "--lock-wait", "60s", "--log-level", "warn"}
	s.must("init", "--encrypt", "--block-size", "64K")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 20))
	start := time.Now()
	for i := range n {
		s.round(i, rng, 0.6)
	}
	tmp := 0
	_ = filepath.WalkDir(filepath.Join(dir, "repo"), func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".cairn-tmp-") {
			tmp++
		}
		return nil
	})
	t.Logf("%d rounds in %s: %d SIGKILLs; %d temporary files of killed writes left; outcomes %v",
		n, time.Since(start).Round(time.Second), s.kills, tmp, s.exits)
	verify(t, repoURL, s)
}

// verify opens the repository without faults: every valid version restores
// byte for byte (its image is known from its volume and round label), a
// deep scrub passes, then a cleanup with no grace, and everything again.
func verify(t *testing.T, url string, s *suite) {
	ctx := context.Background()
	store, err := objstore.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	repo, err := blockdiff.Open(ctx, store, blockdiff.Options{Passphrase: []byte(password), LockTTL: 8 * time.Second, LockWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	check := func(when string) {
		vs, err := repo.List(ctx, blockdiff.Filter{})
		if err != nil {
			t.Fatalf("%s: ls: %v", when, err)
		}
		valid := 0
		status := map[blockdiff.Status]int{}
		for _, v := range vs {
			status[v.Status]++
			if v.Status != blockdiff.StatusValid {
				continue
			}
			valid++
			var vol, r int
			if _, err := fmt.Sscanf(v.Volume, "vol%d", &vol); err != nil {
				t.Fatalf("version %s of volume %q", v.ID, v.Volume)
			}
			if r, err = strconv.Atoi(v.Labels["round"]); err != nil {
				t.Fatalf("version %s has no round label: %v", v.ID, v.Labels)
			}
			dest := filepath.Join(s.dir, "restore-"+v.ID)
			if err := repo.RestoreFile(ctx, v.ID, dest, blockdiff.RestoreFileOptions{}); err != nil {
				t.Fatalf("%s: restore of valid version %s: %v", when, v.ID, err)
			}
			got, err := os.ReadFile(dest)
			if err != nil {
				t.Fatal(err)
			}
			os.Remove(dest)
			if !bytes.Equal(got, image(vol, r)) {
				t.Fatalf("%s: valid version %s (vol%d round %d) restores wrong bytes", when, v.ID, vol, r)
			}
		}
		if valid == 0 {
			t.Fatalf("%s: no valid version at all: %v", when, status)
		}
		// A backup that said it succeeded is still there and valid, unless
		// enforce latest3 removed it: then 3 newer valid versions of its
		// volume exist (a backup killed after its commit may be one).
		byID := map[string]*blockdiff.Version{}
		for _, v := range vs {
			byID[v.ID] = v
		}
		for vol, ids := range s.done {
			for _, id := range ids {
				v := byID[id]
				if v != nil && v.Status == blockdiff.StatusValid {
					continue
				}
				newer := 0
				for _, w := range vs {
					if w.Volume == fmt.Sprintf("vol%d", vol) && w.Status == blockdiff.StatusValid && w.ID[:16] >= id[:16] && w.ID != id { // IDs start with the second
						newer++
					}
				}
				if v != nil || newer < 3 {
					t.Fatalf("%s: backup %s of vol%d succeeded, but its version is %v and %d newer valid ones exist", when, id, vol, v, newer)
				}
			}
		}
		rep, err := repo.Scrub(ctx, blockdiff.ScrubOptions{All: true, Deep: true})
		if err != nil {
			t.Fatalf("%s: deep-scrub: %v", when, err)
		}
		if !rep.OK() {
			t.Fatalf("%s: deep-scrub failed: %+v", when, rep)
		}
		t.Logf("%s: %d valid versions restore byte for byte (statuses %v); deep-scrub of %d objects passes",
			when, valid, status, rep.ObjectsChecked)
	}
	check("after the rounds")
	if _, err := repo.Cleanup(ctx, blockdiff.CleanupOptions{Grace: -1}); err != nil {
		t.Fatalf("final cleanup: %v", err)
	}
	check("after a final cleanup")
}

// emptyBucket deletes the suite's objects (radosgw keeps them in memory).
func emptyBucket(t *testing.T, url string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := objstore.Open(ctx, url)
	if err != nil {
		t.Logf("empty bucket: %v", err)
		return
	}
	defer s.Close()
	for info, err := range s.List(ctx, "") {
		if err != nil {
			return
		}
		_ = s.Delete(ctx, info.Key)
	}
}
