package vmtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/testenv"
	"github.com/cairn-backup/cairn/zfsrepl"
	"github.com/cairn-backup/cairn/zfsrepl/daemon"
)

// The guest runs the real cairn-zrepl.
func init() {
	testenv.ZFSVMCommands = append(testenv.ZFSVMCommands, "github.com/cairn-backup/cairn/cmd/cairn-zrepl")
}

// killPushConfig is a push job limited to 3 MiB/s (zrepl's
// send.bandwidth_limit), so that a 24 MiB step lasts seconds.
const killPushConfig = `global:
  logging:
    - type: stdout
      level: info
      format: human
  control:
    sockpath: %s
jobs:
  - name: push
    type: push
    connect:
      type: tcp
      address: %q
    filesystems: {
      "src/big": true
    }
    send:
      bandwidth_limit:
        max: 3 MiB
    snapshotting:
      type: manual
    pruning:
      keep_sender:
        - type: last_n
          count: 10
      keep_receiver:
        - type: last_n
          count: 10
`

// zreplProc is a `cairn-zrepl daemon` process.
type zreplProc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startZrepl starts `cairn-zrepl daemon --config cfg`, its output in the
// test's log, and waits for its control socket.
func startZrepl(t *testing.T, bin, cfg string) *zreplProc {
	t.Helper()
	cmd := exec.Command(bin, "daemon", "--config", cfg)
	cmd.Stdout, cmd.Stderr = tlog{t}, tlog{t}
	cmd.WaitDelay = 10 * time.Second // its zfs children may hold the output a little longer
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &zreplProc{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	for i := 0; ; i++ {
		if _, err := zreplStatus(t, bin, cfg, "push"); err == nil {
			return p
		} else if i > 300 {
			t.Fatalf("cairn-zrepl daemon did not start: %v", err)
		}
		select {
		case <-p.done:
			t.Fatalf("cairn-zrepl daemon exited: %v", cmd.ProcessState)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// zreplStatus runs `cairn-zrepl status --json` and returns job's status.
func zreplStatus(t *testing.T, bin, cfg, job string) (daemon.Status, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, "status", "--json", "--config", cfg)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return daemon.Status{}, fmt.Errorf("cairn-zrepl status: %v: %s", err, stderr.String())
	}
	var st []daemon.Status
	if err := json.Unmarshal(stdout.Bytes(), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, stdout.String())
	}
	for _, s := range st {
		if s.Name == job {
			return s, nil
		}
	}
	t.Fatalf("no job %s in %s", job, stdout.String())
	return daemon.Status{}, nil
}

// zreplWakeup runs `cairn-zrepl signal wakeup JOB` and waits for the run.
func zreplWakeup(t *testing.T, bin, cfg, job string) daemon.Status {
	t.Helper()
	before, err := zreplStatus(t, bin, cfg, job)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "signal", "wakeup", job, "--config", cfg).CombinedOutput(); err != nil {
		t.Fatalf("cairn-zrepl signal wakeup: %v: %s", err, out)
	}
	for deadline := time.Now().Add(180 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		s, err := zreplStatus(t, bin, cfg, job)
		if err != nil {
			t.Fatal(err)
		}
		if s.Runs > before.Runs && (s.State == daemon.StateIdle || s.State == daemon.StateError) {
			return s
		}
	}
	t.Fatalf("job %s did not run", job)
	return daemon.Status{}
}

// TestDaemonKilledResumes kills (SIGKILL) a `cairn-zrepl daemon` process in
// the middle of a 24 MiB incremental step to a sink: the receiver keeps a
// resume token, and a new daemon process resumes the step from it (sending
// less than the step's size, no full send), releases the step holds the
// killed one left, and the receiver's data equals the sender's.
func TestDaemonKilledResumes(t *testing.T) {
	bin := testenv.GuestCommand(t, "cairn-zrepl")
	pools(t)
	sh(t, "zfs create src/big")
	writeRandom(t, "/src/big/small", 1<<20, 30)
	sh(t, "zfs snapshot src/big@s1")
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	sinkSock := filepath.Join(dir, "sink.sock")
	startJobDaemon(t, fmt.Sprintf(stallSinkConfig, sinkSock, addr), sinkSock, "zrepl_", nil)
	cfg := filepath.Join(dir, "push.yml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, killPushConfig, filepath.Join(dir, "push.sock"), addr), 0o600); err != nil {
		t.Fatal(err)
	}
	const rfs = recvRoot + "/src/big"
	p := startZrepl(t, bin, cfg)
	if s := zreplWakeup(t, bin, cfg, "push"); s.LastError != "" {
		t.Fatalf("first run: %+v", s)
	}
	if got := snapshotsOf(t, rfs); len(got) != 1 || got[0] != "s1" {
		t.Fatalf("receiver holds %v", got)
	}

	const size = 24 << 20
	writeRandom(t, "/src/big/large", size, 31)
	sh(t, "zfs snapshot src/big@s2")
	if out, err := exec.Command(bin, "signal", "wakeup", "push", "--config", cfg).CombinedOutput(); err != nil {
		t.Fatalf("cairn-zrepl signal wakeup: %v: %s", err, out)
	}
	// Watch the step's bytes on the control socket (what status --json
	// prints, without a process per look).
	ctl := daemon.NewControl(filepath.Join(dir, "push.sock"))
	var seen int64
	for deadline := time.Now().Add(180 * time.Second); seen < 6<<20; time.Sleep(20 * time.Millisecond) {
		st, err := ctl.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		s := st[0]
		if s.Runs > 1 || time.Now().After(deadline) {
			t.Fatalf("the step was not caught midway: %+v", s)
		}
		if s.State == daemon.StateReplicating {
			seen = s.StepBytes
		}
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the daemon ended with %v, not SIGKILL", p.cmd.ProcessState)
	}
	t.Logf("killed the daemon at %d bytes of the step", seen)
	tok := ""
	for deadline := time.Now().Add(60 * time.Second); (tok == "" || tok == "-") && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		tok = sh(t, "zfs get -H -o value receive_resume_token "+rfs)
	}
	if tok == "-" || tok == "" {
		t.Fatal("no receive_resume_token after the daemon was killed mid-step")
	}
	if holds := sh(t, "zfs holds -H src/big@s1 src/big@s2"); strings.Count(holds, zfsrepl.StepHoldTag("push")) != 2 {
		t.Fatalf("the killed daemon did not leave its step holds: %q", holds)
	}

	startZrepl(t, bin, cfg)
	s := zreplWakeup(t, bin, cfg, "push")
	if s.LastError != "" || s.Replication == nil || len(s.Replication.Filesystems) != 1 {
		t.Fatalf("after the restart: %+v", s)
	}
	fr := s.Replication.Filesystems[0]
	if len(fr.Steps) != 1 || fr.Steps[0].Kind != zfsrepl.StepResume || fr.Bytes >= size || fr.Bytes == 0 {
		t.Fatalf("not resumed: %+v", fr)
	}
	t.Logf("resumed with %d bytes after the kill at %d (step of %d MiB)", fr.Bytes, seen, size>>20)
	if got := snapshotsOf(t, rfs); len(got) != 2 || got[1] != "s2" {
		t.Fatalf("receiver holds %v", got)
	}
	if tok := sh(t, "zfs get -H -o value receive_resume_token "+rfs); tok != "-" {
		t.Fatalf("resume token left: %s", tok)
	}
	if holds := sh(t, "zfs holds -H src/big@s1 src/big@s2"); strings.Contains(holds, zfsrepl.StepHoldTag("push")) {
		t.Fatalf("step holds left: %s", holds)
	}
	if a, b := snapshotHash(t, "src/big@s2"), snapshotHash(t, rfs+"@s2"); a != b {
		t.Fatal("data differs after the resume")
	}
}
