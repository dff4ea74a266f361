package transport_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/zfsrepl"
	"github.com/cairn-backup/cairn/zfsrepl/internal/memzfs"
	"github.com/cairn-backup/cairn/zfsrepl/transport"
	"github.com/cairn-backup/cairn/zfsrepl/transport/transporttest"
	"github.com/cairn-backup/cairn/zfsrepl/zfs"
)

// --- a sink over the in-memory pool ------------------------------------------

func memReceivers(pool *memzfs.Pool, root string) func(string) (zfsrepl.Receiver, error) {
	return func(id string) (zfsrepl.Receiver, error) {
		if err := transport.ValidateIdentity(id); err != nil {
			return nil, err
		}
		return &memzfs.Receiver{Pool: pool, Root: root + "/" + id, Job: "sink"}, nil
	}
}

func source(t testing.TB) (*memzfs.Pool, *memzfs.Sender) {
	src := memzfs.New(100)
	src.CreateFS("tank/garage/data")
	for _, fs := range []string{"tank/garage", "tank/garage/data"} {
		src.Snapshot(fs, "s1")
	}
	f, err := zfsrepl.NewFilter(map[string]bool{"tank/garage<": true})
	if err != nil {
		t.Fatal(err)
	}
	return src, &memzfs.Sender{Pool: src, Job: "push", Filter: f}
}

func sink() *memzfs.Pool {
	p := memzfs.New(900)
	p.CreateFS("wdc/zrepl")
	return p
}

type tlsSink struct {
	addr string
	ca   *transporttest.CA
	srv  *http.Server
}

func startTLSSink(t *testing.T, pool *memzfs.Pool, cns []string) *tlsSink {
	t.Helper()
	ca := transporttest.NewCA(t, "cairn test CA")
	srv, err := transport.NewTLSServer(&transport.Server{Receivers: memReceivers(pool, "wdc/zrepl")},
		transport.TLSServerConfig{CA: ca.Pool, Cert: ca.Issue(t, "backup", true), ClientCNs: cns})
	if err != nil {
		t.Fatal(err)
	}
	srv.ErrorLog = nil
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.ServeTLS(l, "", "") }()
	t.Cleanup(func() { srv.Close() })
	return &tlsSink{addr: l.Addr().String(), ca: ca, srv: srv}
}

func TestTLSReplication(t *testing.T) {
	ctx := context.Background()
	dst := sink()
	s := startTLSSink(t, dst, []string{"garage"})
	src, sender := source(t)
	c, err := transport.NewTLSClient(s.addr, transport.TLSClientConfig{CA: s.ca.Pool, Cert: s.ca.Issue(t, "garage", false), ServerName: "backup"}, transport.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := zfsrepl.Replicate(ctx, sender, c, zfsrepl.Config{Job: "push"}).Err(); err != nil {
		t.Fatal(err)
	}
	src.Snapshot("tank/garage/data", "s2")
	src.Snapshot("tank/garage/data", "s3")
	rep := zfsrepl.Replicate(ctx, sender, c, zfsrepl.Config{Job: "push"})
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
	if got := len(dst.Versions("wdc/zrepl/garage/tank/garage/data")); got != 3 {
		t.Fatalf("receiver has %d versions of data", got)
	}
	fss, err := c.ListFilesystems(ctx)
	if err != nil || len(fss) != 3 { // tank (placeholder), tank/garage, tank/garage/data
		t.Fatalf("ListFilesystems = %v, %v", fss, err)
	}
	if !fss[0].Placeholder || fss[0].Name != "tank" {
		t.Fatalf("parent is not a placeholder: %+v", fss[0])
	}
}

func TestTLSRefusesClients(t *testing.T) {
	ctx := context.Background()
	dst := sink()
	s := startTLSSink(t, dst, []string{"garage"})
	_, sender := source(t)
	other := transporttest.NewCA(t, "another CA")
	cases := map[string]transport.TLSClientConfig{
		"no certificate":    {CA: s.ca.Pool, ServerName: "backup"},
		"unlisted CN":       {CA: s.ca.Pool, Cert: s.ca.Issue(t, "intruder", false), ServerName: "backup"},
		"foreign CA":        {CA: s.ca.Pool, Cert: other.Issue(t, "garage", false), ServerName: "backup"},
		"server not the CA": {CA: other.Pool, Cert: s.ca.Issue(t, "garage", false), ServerName: "backup"},
	}
	for name, cfg := range cases {
		t.Run(name, func(t *testing.T) {
			c, err := transport.NewTLSClient(s.addr, cfg, transport.ClientOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.ListFilesystems(ctx); err == nil {
				t.Fatal("ListFilesystems succeeded")
			}
			rep := zfsrepl.Replicate(ctx, sender, c, zfsrepl.Config{Job: "push"})
			if rep.Err() == nil {
				t.Fatal("replication succeeded")
			}
		})
	}
	if fss := dst.Filesystems(); len(fss) != 2 { // wdc, wdc/zrepl
		t.Fatalf("a refused client wrote: %v", fss)
	}
}

func TestTCPIdentity(t *testing.T) {
	ctx := context.Background()
	dst := sink()
	_, sender := source(t)
	for _, tc := range []struct {
		clients map[string]string
		ok      bool
	}{{map[string]string{"127.0.0.1": "garage"}, true}, {map[string]string{"10.9.9.9": "garage"}, false}} {
		srv, err := transport.NewTCPServer(&transport.Server{Receivers: memReceivers(dst, "wdc/zrepl")}, tc.clients)
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = srv.Serve(l) }()
		c := transport.NewTCPClient(l.Addr().String(), transport.ClientOptions{})
		err = zfsrepl.Replicate(ctx, sender, c, zfsrepl.Config{Job: "push"}).Err()
		c.Close()
		srv.Close()
		if tc.ok && err != nil {
			t.Fatalf("%v: %v", tc.clients, err)
		}
		if !tc.ok && (err == nil || !errors.Is(err, transport.ErrRefused)) {
			t.Fatalf("%v: got %v, want refused", tc.clients, err)
		}
	}
	if len(dst.Versions("wdc/zrepl/garage/tank/garage")) != 1 {
		t.Fatal("not replicated over TCP")
	}
}

// TestNameEscapes sends hostile names straight to the sink's wire protocol:
// every one is refused and nothing is created outside (or inside) the root.
func TestNameEscapes(t *testing.T) {
	ctx := context.Background()
	dst := sink()
	c := transport.InProcess(&transport.Server{Receivers: memReceivers(dst, "wdc/zrepl")}, "garage", transport.ClientOptions{})
	defer c.Close()
	bad := []string{"..", "../other", "a/../../x", "/wdc/zrepl/other", "a@b", "a#b", "a\x00b", "a\nb", "a/./b", "", "a//b", "a/"}
	for _, fs := range bad {
		step := zfsrepl.Step{Kind: zfsrepl.StepFull, To: zfs.Version{Type: zfs.Snapshot, Name: "s1", GUID: 1}}
		err := c.Receive(ctx, zfsrepl.ReceiveRequest{Filesystem: fs, Step: step}, strings.NewReader("x"))
		if !errors.Is(err, transport.ErrRefused) {
			t.Errorf("Receive(%q) = %v, want refused", fs, err)
		}
		if _, err := c.ListVersions(ctx, fs); !errors.Is(err, transport.ErrRefused) {
			t.Errorf("ListVersions(%q) = %v, want refused", fs, err)
		}
		if _, err := c.ResumeToken(ctx, fs); !errors.Is(err, transport.ErrRefused) {
			t.Errorf("ResumeToken(%q) = %v, want refused", fs, err)
		}
		if err := c.DestroySnapshots(ctx, fs, nil); !errors.Is(err, transport.ErrRefused) {
			t.Errorf("DestroySnapshots(%q) = %v, want refused", fs, err)
		}
	}
	for _, snap := range []string{"..", "a/b", "a@b", "", "x\x01"} {
		step := zfsrepl.Step{Kind: zfsrepl.StepFull, To: zfs.Version{Type: zfs.Snapshot, Name: snap, GUID: 1}}
		err := c.Receive(ctx, zfsrepl.ReceiveRequest{Filesystem: "tank/a", Step: step}, strings.NewReader("x"))
		if !errors.Is(err, transport.ErrRefused) {
			t.Errorf("Receive(snapshot %q) = %v, want refused", snap, err)
		}
		err = c.DestroySnapshots(ctx, "tank/a", []zfs.Version{{Type: zfs.Snapshot, Name: snap}})
		if !errors.Is(err, transport.ErrRefused) {
			t.Errorf("DestroySnapshots(%q) = %v, want refused", snap, err)
		}
	}
	if err := c.DestroySnapshots(ctx, "tank/a", []zfs.Version{{Type: zfs.Bookmark, Name: "b"}}); !errors.Is(err, transport.ErrRefused) {
		t.Errorf("destroying a bookmark: %v", err)
	}
	if fss := dst.Filesystems(); len(fss) != 2 {
		t.Fatalf("hostile names created %v", fss)
	}
	// Identities that are not one component are refused too.
	for _, id := range []string{"..", "a/b", "", "x@y"} {
		evil := transport.InProcess(&transport.Server{Receivers: memReceivers(dst, "wdc/zrepl")}, id, transport.ClientOptions{})
		if _, err := evil.ListFilesystems(ctx); !errors.Is(err, transport.ErrRefused) {
			t.Errorf("identity %q: %v", id, err)
		}
		evil.Close()
	}
}

// TestRawURL checks that the query string is decoded before validation:
// escaped "../" is still refused.
func TestRawURL(t *testing.T) {
	if err := transport.ValidateWireName(mustUnescape(t, "..%2Fx")); err == nil {
		t.Fatal("escaped ../ accepted")
	}
}

func mustUnescape(t *testing.T, s string) string {
	u, err := url.QueryUnescape(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// cutConn closes the connection after limit bytes were written.
type cutConn struct {
	net.Conn
	mu      sync.Mutex
	limit   int
	written int
}

func (c *cutConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.written+len(p) > c.limit {
		n := c.limit - c.written
		if n > 0 {
			c.Conn.Write(p[:n])
		}
		c.Conn.Close()
		return 0, io.ErrClosedPipe
	}
	c.written += len(p)
	return c.Conn.Write(p)
}

func TestInterruptedResumes(t *testing.T) {
	ctx := context.Background()
	dst := sink()
	src, sender := source(t)
	src.PayloadSize = 4 << 20
	src.Snapshot("tank/garage/data", "s2")
	sender.Filter, _ = zfsrepl.NewFilter(map[string]bool{"tank/garage/data": true})
	srv := &transport.Server{Receivers: memReceivers(dst, "wdc/zrepl")}
	cut := true
	c := transport.InProcess(srv, "garage", transport.ClientOptions{
		NoCompression: true, // the payload compresses well: cut by raw size
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			conn := transport.PipeConn(ctx)
			if cut {
				cut = false
				return &cutConn{Conn: conn, limit: 1 << 20}, nil
			}
			return conn, nil
		}})
	defer c.Close()
	rep := zfsrepl.Replicate(ctx, sender, c, zfsrepl.Config{Job: "push"})
	if rep.Err() == nil {
		t.Fatal("cut transfer succeeded")
	}
	// The sink notices the cut asynchronously.
	deadline := time.Now().Add(10 * time.Second)
	var tok string
	for tok == "" && time.Now().Before(deadline) {
		tok, _ = (&memzfs.Receiver{Pool: dst, Root: "wdc/zrepl/garage"}).ResumeToken(ctx, "tank/garage/data")
		time.Sleep(10 * time.Millisecond)
	}
	if tok == "" {
		t.Fatal("no resume token on the sink")
	}
	rep = zfsrepl.Replicate(ctx, sender, c, zfsrepl.Config{Job: "push"})
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
	fr := rep.Filesystems[0]
	if fr.Steps[0].Kind != zfsrepl.StepResume || fr.Bytes >= 4<<20 {
		t.Fatalf("not resumed or resent in full: %+v", fr)
	}
	t.Logf("resumed with %d of %d bytes", fr.Bytes, 4<<20)
}
