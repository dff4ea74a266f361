package vmtest

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/internal/testenv"
	"github.com/cairn-backup/cairn/zfsrepl"
	"github.com/cairn-backup/cairn/zfsrepl/transport"
	"github.com/cairn-backup/cairn/zfsrepl/transport/transporttest"
	"github.com/cairn-backup/cairn/zfsrepl/zfs"
)

func TestMain(m *testing.M) { os.Exit(testenv.RunInZFSVM(m)) }

// sh runs a shell command in the guest and returns its trimmed output.
func sh(t testing.TB, cmd string) string {
	t.Helper()
	out, err := exec.Command("sh", "-c", cmd).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, out)
	}
	return strings.TrimSpace(string(out))
}

// writeRandom writes size pseudo-random (incompressible) bytes to path.
func writeRandom(t testing.TB, path string, size int64, seed uint64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), 7})
	if _, err := io.CopyN(f, r, size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// treeHash hashes every regular file below dir (relative name and content).
func treeHash(t testing.TB, dir string) string {
	t.Helper()
	h := sha256.New()
	n := 0
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		io.WriteString(h, rel+"\x00")
		_, err = io.Copy(h, f)
		n++
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatalf("no files below %s", dir)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// snapshotHash hashes the files of a snapshot by mounting a clone of it.
func snapshotHash(t testing.TB, snap string) string {
	t.Helper()
	fs, _, name, err := zfs.ParseVersionName(snap)
	if err != nil {
		t.Fatal(err)
	}
	pool, _, _ := strings.Cut(fs, "/")
	clone := pool + "/chk_" + name
	mnt := t.TempDir()
	sh(t, "zfs clone -o mountpoint="+mnt+" -o canmount=on "+snap+" "+clone)
	defer sh(t, "zfs destroy "+clone)
	sh(t, "zfs mount "+clone+" 2>/dev/null || true")
	return treeHash(t, mnt)
}

// sinkEnv is a TLS sink on loopback over pool dst (root_fs dst/zrepl) with a
// push client "garage".
type sinkEnv struct {
	ca     *transporttest.CA
	addr   string
	runner *zfs.Runner
	client *transport.Client
}

func startSink(t testing.TB, rootFS string, cns []string) *sinkEnv {
	t.Helper()
	runner := &zfs.Runner{}
	ca := transporttest.NewCA(t, "cairn vm CA")
	srv, err := transport.NewTLSServer(&transport.Server{Receivers: transport.SinkReceivers(runner, rootFS, "sink")},
		transport.TLSServerConfig{CA: ca.Pool, Cert: ca.Issue(t, "backup", true), ClientCNs: cns})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.ServeTLS(l, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	e := &sinkEnv{ca: ca, addr: l.Addr().String(), runner: runner}
	e.client = e.connect(t, "garage", transport.ClientOptions{})
	return e
}

// startTCPSink starts a TCP sink (identity garage for 127.0.0.1) and returns
// its client.
func startTCPSink(t testing.TB, rootFS string) *transport.Client {
	t.Helper()
	srv, err := transport.NewTCPServer(&transport.Server{Receivers: transport.SinkReceivers(&zfs.Runner{}, rootFS, "sink")},
		map[string]string{"127.0.0.1": "garage"})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	c := transport.NewTCPClient(l.Addr().String(), transport.ClientOptions{})
	t.Cleanup(func() { c.Close() })
	return c
}

func (e *sinkEnv) connect(t testing.TB, cn string, o transport.ClientOptions) *transport.Client {
	t.Helper()
	c, err := transport.NewTLSClient(e.addr, transport.TLSClientConfig{CA: e.ca.Pool, Cert: e.ca.Issue(t, cn, false), ServerName: "backup"}, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func sender(t testing.TB, filter map[string]bool) *zfsrepl.LocalSender {
	t.Helper()
	f, err := zfsrepl.NewFilter(filter)
	if err != nil {
		t.Fatal(err)
	}
	return &zfsrepl.LocalSender{ZFS: &zfs.Runner{}, Job: "push", Filter: f}
}

func replicate(t testing.TB, s zfsrepl.Sender, r zfsrepl.Receiver, raw bool) *zfsrepl.Report {
	t.Helper()
	return zfsrepl.Replicate(context.Background(), s, r, zfsrepl.Config{Job: "push", Plan: zfsrepl.PlanConfig{Raw: raw}})
}

func versions(t testing.TB, fs string) []zfs.Version {
	t.Helper()
	vs, err := (&zfs.Runner{}).ListVersions(context.Background(), fs)
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

// guids returns "name=guid ..." of the snapshots of fs.
func guids(t testing.TB, fs string) string {
	var s []string
	for _, v := range versions(t, fs) {
		if v.Type == zfs.Snapshot {
			s = append(s, v.Name+"="+hex.EncodeToString([]byte{byte(v.GUID >> 56), byte(v.GUID >> 48), byte(v.GUID >> 40), byte(v.GUID >> 32), byte(v.GUID >> 24), byte(v.GUID >> 16), byte(v.GUID >> 8), byte(v.GUID)}))
		}
	}
	return strings.Join(s, " ")
}

var _ = http.StatusOK

func testTLSServer(t testing.TB, ca *transporttest.CA) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "backup", true)}, NextProtos: []string{"h2"}}
}

func testTLSClient(t testing.TB, ca *transporttest.CA) *tls.Config {
	return &tls.Config{RootCAs: ca.Pool, ServerName: "backup", NextProtos: []string{"h2"}}
}
