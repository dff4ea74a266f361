package vmtest

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/testenv"
	"github.com/cairn-backup/cairn/zfsrepl"
	"github.com/cairn-backup/cairn/zfsrepl/transport"
	"github.com/cairn-backup/cairn/zfsrepl/zfs"
)

const recvRoot = "dst/zrepl/garage" // root_fs dst/zrepl, identity garage

func pools(t testing.TB) {
	testenv.ZPool(t, "src")
	testenv.ZPool(t, "dst")
	sh(t, "zfs create dst/zrepl")
}

// TestFullThenIncremental replicates a filesystem with a child over mutual
// TLS, first in full then incrementally, and checks GUIDs, data, the
// replication cursor, the holds and the placeholders.
func TestFullThenIncremental(t *testing.T) {
	pools(t)
	sh(t, "zfs create src/data && zfs create src/data/child")
	writeRandom(t, "/src/data/a", 3<<20, 1)
	writeRandom(t, "/src/data/child/b", 1<<20, 2)
	sh(t, "zfs snapshot -r src/data@s1")
	e := startSink(t, "dst/zrepl", []string{"garage"})
	s := sender(t, map[string]bool{"src/data<": true})

	rep := replicate(t, s, e.client, false)
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
	for _, fr := range rep.Filesystems {
		if fr.State != zfsrepl.StateDone || fr.Steps[0].Kind != zfsrepl.StepFull {
			t.Fatalf("%+v", fr)
		}
	}
	writeRandom(t, "/src/data/c", 2<<20, 3)
	sh(t, "zfs snapshot -r src/data@s2")
	writeRandom(t, "/src/data/child/d", 2<<20, 4)
	sh(t, "rm /src/data/a && zfs snapshot -r src/data@s3")
	rep = replicate(t, s, e.client, false)
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
	for _, fr := range rep.Filesystems {
		if fr.State != zfsrepl.StateDone || len(fr.Steps) != 2 || fr.Steps[0].Kind != zfsrepl.StepIncremental ||
			fr.Steps[0].From != "@s1" || fr.Steps[1].To != "@s3" {
			t.Fatalf("%+v", fr)
		}
	}
	for _, fs := range []string{"src/data", "src/data/child"} {
		if got, want := guids(t, recvRoot+"/"+fs), guids(t, fs); got != want {
			t.Fatalf("%s: receiver %q, sender %q", fs, got, want)
		}
		for _, snap := range []string{"s1", "s3"} {
			if a, b := snapshotHash(t, fs+"@"+snap), snapshotHash(t, recvRoot+"/"+fs+"@"+snap); a != b {
				t.Fatalf("%s@%s differs on the receiver", fs, snap)
			}
		}
		// The cursor bookmark marks s3; no step hold is left.
		var s3 zfs.Version
		var cursors []string
		for _, v := range versions(t, fs) {
			if v.Name == "s3" {
				s3 = v
			}
			if v.Type == zfs.Bookmark && zfsrepl.IsCursor(v.Name, "push") {
				cursors = append(cursors, v.Name)
			}
			if v.Type == zfs.Snapshot {
				if h := sh(t, "zfs holds -H "+v.FullName()); h != "" {
					t.Fatalf("hold left on the sender: %s", h)
				}
			}
		}
		if len(cursors) != 1 || cursors[0] != zfsrepl.CursorName(s3.GUID, "push") {
			t.Fatalf("%s: cursors %v, want one on s3", fs, cursors)
		}
		// The receiver holds its newest snapshot only.
		if h := sh(t, "zfs holds -H "+recvRoot+"/"+fs+"@s3"); !strings.Contains(h, zfsrepl.LastReceivedHoldTag("sink")) {
			t.Fatalf("no last-received hold on s3: %q", h)
		}
		if h := sh(t, "zfs holds -H "+recvRoot+"/"+fs+"@s1"); h != "" {
			t.Fatalf("stale hold on s1: %q", h)
		}
	}
	if ph := sh(t, "zfs get -H -o value zrepl:placeholder "+recvRoot+"/src"); ph != "on" {
		t.Fatalf("parent of the received filesystem is not a placeholder: %q", ph)
	}
	if ph := sh(t, "zfs get -H -o value zrepl:placeholder "+recvRoot+"/src/data"); ph == "on" {
		t.Fatal("received filesystem is marked placeholder")
	}
	// Up to date now.
	rep = replicate(t, s, e.client, false)
	for _, fr := range rep.Filesystems {
		if fr.State != zfsrepl.StateUpToDate {
			t.Fatalf("%+v", fr)
		}
	}
}

// cutConn closes the connection after limit bytes were written to it.
type cutConn struct {
	net.Conn
	mu      sync.Mutex
	limit   int64
	written int64
}

func (c *cutConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.written+int64(len(p)) > c.limit {
		c.Conn.Close()
		return 0, net.ErrClosed
	}
	c.written += int64(len(p))
	return c.Conn.Write(p)
}

// TestInterruptedResumes cuts the TLS connection in the middle of a full
// send: the sink keeps a resume token and the next round resumes from it
// without sending everything again.
func TestInterruptedResumes(t *testing.T) {
	pools(t)
	sh(t, "zfs create src/big")
	const size = 48 << 20
	writeRandom(t, "/src/big/f", size, 5)
	sh(t, "zfs snapshot src/big@s1")
	e := startSink(t, "dst/zrepl", []string{"garage"})
	s := sender(t, map[string]bool{"src/big": true})
	var once sync.Once
	cutter := e.connect(t, "garage", transport.ClientOptions{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		var wrapped net.Conn = c
		once.Do(func() { wrapped = &cutConn{Conn: c, limit: 20 << 20} })
		return wrapped, nil
	}})
	rep := replicate(t, s, cutter, false)
	if rep.Err() == nil {
		t.Fatal("the cut transfer succeeded")
	}
	t.Logf("cut: %v", rep.Err())
	var tok string
	for deadline := time.Now().Add(60 * time.Second); tok == "" && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		tok = sh(t, "zfs get -H -o value receive_resume_token "+recvRoot+"/src/big 2>/dev/null || true")
		if tok == "-" {
			tok = ""
		}
	}
	if tok == "" {
		t.Fatal("no receive_resume_token after the cut")
	}
	rep = replicate(t, s, e.client, false)
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
	fr := rep.Filesystems[0]
	if fr.Steps[0].Kind != zfsrepl.StepResume {
		t.Fatalf("not resumed: %+v", fr)
	}
	if fr.Bytes >= size {
		t.Fatalf("resumed with %d bytes: a full resend (%d)", fr.Bytes, size)
	}
	t.Logf("resumed with %d bytes of a %d-byte file", fr.Bytes, size)
	if a, b := snapshotHash(t, "src/big@s1"), snapshotHash(t, recvRoot+"/src/big@s1"); a != b {
		t.Fatal("data differs after the resume")
	}
}

// TestFromBookmark destroys the sender's replicated snapshot: the next
// incremental is sent from the replication cursor bookmark.
func TestFromBookmark(t *testing.T) {
	pools(t)
	sh(t, "zfs create src/bm")
	writeRandom(t, "/src/bm/a", 1<<20, 6)
	sh(t, "zfs snapshot src/bm@s1")
	e := startSink(t, "dst/zrepl", []string{"garage"})
	s := sender(t, map[string]bool{"src/bm": true})
	if err := replicate(t, s, e.client, false).Err(); err != nil {
		t.Fatal(err)
	}
	sh(t, "zfs destroy src/bm@s1") // no hold is left to prevent it
	writeRandom(t, "/src/bm/b", 1<<20, 7)
	sh(t, "zfs snapshot src/bm@s2")
	rep := replicate(t, s, e.client, false)
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
	st := rep.Filesystems[0].Steps
	if len(st) != 1 || st[0].Kind != zfsrepl.StepIncremental || !strings.HasPrefix(st[0].From, "#zrepl_CURSOR_G_") {
		t.Fatalf("%+v", st)
	}
	if a, b := snapshotHash(t, "src/bm@s2"), snapshotHash(t, recvRoot+"/src/bm@s2"); a != b {
		t.Fatal("data differs")
	}
}

// TestRefusedClients: a client without a certificate and one whose CN is not
// listed are refused, and nothing is written on the sink.
func TestRefusedClients(t *testing.T) {
	pools(t)
	sh(t, "zfs create src/x && zfs snapshot src/x@s1")
	e := startSink(t, "dst/zrepl", []string{"garage"})
	s := sender(t, map[string]bool{"src/x": true})
	nocert, err := transport.NewTLSClient(e.addr, transport.TLSClientConfig{CA: e.ca.Pool, ServerName: "backup"}, transport.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer nocert.Close()
	for name, c := range map[string]*transport.Client{"no certificate": nocert, "unlisted CN": e.connect(t, "intruder", transport.ClientOptions{})} {
		if err := replicate(t, s, c, false).Err(); err == nil {
			t.Fatalf("%s: replication succeeded", name)
		}
	}
	if got := sh(t, "zfs list -H -r -o name dst"); got != "dst\ndst/zrepl" {
		t.Fatalf("the sink changed: %q", got)
	}
}

// TestCannotEscapeRoot: hostile names from an authenticated client are
// refused; nothing is created outside (or inside) its root.
func TestCannotEscapeRoot(t *testing.T) {
	pools(t)
	sh(t, "zfs create dst/zrepl/other && zfs create dst/keep && zfs snapshot dst/keep@k")
	sh(t, "zfs create src/x && zfs snapshot src/x@s1")
	e := startSink(t, "dst/zrepl", []string{"garage", "other"})
	before := sh(t, "zfs list -H -t all -r -o name,guid dst")
	ctx := context.Background()
	v := versions(t, "src/x")[0]
	for _, fs := range []string{"../other/x", "../../keep", "/dst/keep", "x@s1", "x#b", "a/../../../keep", "x\n", ".."} {
		stream, err := (&zfs.Runner{}).Send(ctx, zfs.SendArgs{To: "src/x@s1"})
		if err != nil {
			t.Fatal(err)
		}
		err = e.client.Receive(ctx, zfsrepl.ReceiveRequest{Filesystem: fs, Step: zfsrepl.Step{Kind: zfsrepl.StepFull, To: v}}, stream)
		if !errors.Is(err, transport.ErrRefused) {
			t.Errorf("Receive(%q) = %v, want refused", fs, err)
		}
		stream.Close()
		if err := e.client.DestroySnapshots(ctx, fs, []zfs.Version{{Type: zfs.Snapshot, Name: "k"}}); !errors.Is(err, transport.ErrRefused) {
			t.Errorf("DestroySnapshots(%q) = %v, want refused", fs, err)
		}
	}
	// The client sees only its own tree.
	other, err := e.connect(t, "other", transport.ClientOptions{}).ListFilesystems(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(other) != 0 {
		t.Fatalf("client other sees %v", other)
	}
	if after := sh(t, "zfs list -H -t all -r -o name,guid dst"); after != before {
		t.Fatalf("the sink changed:\n%s\n->\n%s", before, after)
	}
}

// TestDivergedUntouched: a receiver with a snapshot of its own is reported as
// diverged, and left exactly as it was.
func TestDivergedUntouched(t *testing.T) {
	pools(t)
	sh(t, "zfs create src/d")
	writeRandom(t, "/src/d/a", 1<<20, 8)
	sh(t, "zfs snapshot src/d@s1")
	e := startSink(t, "dst/zrepl", []string{"garage"})
	s := sender(t, map[string]bool{"src/d": true})
	if err := replicate(t, s, e.client, false).Err(); err != nil {
		t.Fatal(err)
	}
	sh(t, "zfs snapshot "+recvRoot+"/src/d@local")
	sh(t, "zfs snapshot src/d@s2")
	before := sh(t, "zfs list -H -t all -r -p -o name,guid,createtxg,written dst")
	rep := replicate(t, s, e.client, false)
	fr := rep.Filesystems[0]
	if fr.State != zfsrepl.StateConflict || fr.Conflict != zfsrepl.ConflictDiverged || !errors.Is(rep.Err(), zfsrepl.ErrConflict) {
		t.Fatalf("%+v", fr)
	}
	t.Logf("reported: %s", fr.Error)
	if after := sh(t, "zfs list -H -t all -r -p -o name,guid,createtxg,written dst"); after != before {
		t.Fatalf("the receiver changed:\n%s\n->\n%s", before, after)
	}
}

// TestRawEncrypted: a raw send of an encrypted dataset arrives encrypted, its
// key not loaded, and decrypts to the same data.
func TestRawEncrypted(t *testing.T) {
	pools(t)
	key := t.TempDir() + "/key"
	sh(t, "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > "+key)
	sh(t, "zfs create -o encryption=on -o keyformat=hex -o keylocation=file://"+key+" src/enc")
	writeRandom(t, "/src/enc/a", 2<<20, 9)
	sh(t, "zfs snapshot src/enc@e1")
	e := startSink(t, "dst/zrepl", []string{"garage"})
	s := sender(t, map[string]bool{"src/enc": true})
	rep := replicate(t, s, e.client, true)
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
	writeRandom(t, "/src/enc/b", 1<<20, 10)
	sh(t, "zfs snapshot src/enc@e2")
	if err := replicate(t, s, e.client, true).Err(); err != nil {
		t.Fatal(err)
	}
	got := sh(t, "zfs get -H -o value encryption,keystatus "+recvRoot+"/src/enc")
	if lines := strings.Fields(got); len(lines) != 2 || lines[0] == "off" || lines[1] != "unavailable" {
		t.Fatalf("received dataset: encryption,keystatus = %q", got)
	}
	sh(t, "zfs load-key -L file://"+key+" "+recvRoot+"/src/enc")
	if a, b := snapshotHash(t, "src/enc@e2"), snapshotHash(t, recvRoot+"/src/enc@e2"); a != b {
		t.Fatal("decrypted data differs")
	}
	if !slices.ContainsFunc(versions(t, recvRoot+"/src/enc"), func(v zfs.Version) bool { return v.Name == "e1" }) {
		t.Fatal("e1 missing")
	}
}
