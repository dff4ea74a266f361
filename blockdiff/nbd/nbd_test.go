package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// memExports serves byte slices; the data source is a fake, the protocol and
// the client are real. It counts the exports open, which the server must
// close when a connection is done with them.
type memExports struct {
	data map[string][]byte
	open atomic.Int64
}

func newMemExports(data map[string][]byte) *memExports { return &memExports{data: data} }

type memExport struct {
	*bytes.Reader
	open *atomic.Int64
}

func (e memExport) Size() int64  { return e.Reader.Size() }
func (e memExport) Close() error { e.open.Add(-1); return nil }

func (m *memExports) Open(_ context.Context, name string) (Export, error) {
	b, ok := m.data[name]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownExport, name)
	}
	m.open.Add(1)
	return memExport{bytes.NewReader(b), &m.open}, nil
}

func (m *memExports) List(context.Context) ([]string, error) {
	var n []string
	for k := range m.data {
		n = append(n, k)
	}
	slices.Sort(n)
	return n, nil
}

// requireAllClosed waits for the server to close every export its finished
// connections opened.
func (m *memExports) requireAllClosed(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool { return m.open.Load() == 0 }, 5*time.Second, 5*time.Millisecond,
		"exports left open: %d", m.open.Load())
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// serve starts a server on a loopback port and returns its address.
func serve(t *testing.T, exp Exports) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- (&Server{Exports: exp, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}).Serve(ctx, l)
	}()
	t.Cleanup(func() {
		cancel()
		assert.NoError(t, <-done)
	})
	return l.Addr().String()
}

// tool returns the path of a client program: skipped when absent on a
// developer's machine, a failure under CI (make test installs qemu-utils).
func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		msg := name + " not found (apt-get install qemu-utils, or run make test)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

func TestQemuImgReadsExportsByteForByte(t *testing.T) {
	qemuImg := tool(t, "qemu-img")
	data := randomBytes(5<<20+123, 1) // not a multiple of any block size
	zeros := make([]byte, 3<<20)
	exps := newMemExports(map[string][]byte{"v-random": data, "v-zeros": zeros})
	addr := serve(t, exps)
	for name, want := range map[string][]byte{"v-random": data, "v-zeros": zeros} {
		out := filepath.Join(t.TempDir(), name+".img")
		cmd := exec.Command(qemuImg, "convert", "-f", "raw", "-O", "raw", "nbd://"+addr+"/"+name, out)
		b, err := cmd.CombinedOutput()
		require.NoError(t, err, "qemu-img: %s", b)
		got, err := os.ReadFile(out)
		require.NoError(t, err)
		// qemu-img writes whole 512-byte sectors: the tail past the export is zeros.
		require.Equal(t, (len(want)+511)/512*512, len(got), name)
		require.True(t, bytes.Equal(want, got[:len(want)]), "%s: bytes read over NBD differ", name)
		require.Equal(t, make([]byte, len(got)-len(want)), got[len(want):], "%s: sector padding", name)
	}
	exps.requireAllClosed(t)
}

func TestQemuNbdListsExports(t *testing.T) {
	qemuNbd := tool(t, "qemu-nbd")
	exps := newMemExports(map[string][]byte{"version-a": []byte("a"), "version-b": make([]byte, 4096)})
	addr := serve(t, exps)
	host, port, _ := net.SplitHostPort(addr)
	out, err := exec.Command(qemuNbd, "--list", "-b", host, "-p", port).CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "export: 'version-a'")
	assert.Contains(t, string(out), "export: 'version-b'")
	assert.Contains(t, string(out), "size:  4096")
	exps.requireAllClosed(t) // --list asks INFO of each export
}

func TestQemuImgUnknownExport(t *testing.T) {
	qemuImg := tool(t, "qemu-img")
	addr := serve(t, newMemExports(map[string][]byte{"v1": []byte("x")}))
	out, err := exec.Command(qemuImg, "info", "nbd://"+addr+"/nope").CombinedOutput()
	require.Error(t, err)
	assert.Contains(t, string(out), `export "nope"`)
}

// client is a minimal old-style client for the cases qemu never sends.
type client struct {
	t *testing.T
	c net.Conn
}

func dial(t *testing.T, addr, export string) (*client, int64) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	var hello struct {
		Magic, Opt uint64
		Flags      uint16
	}
	require.NoError(t, binary.Read(c, binary.BigEndian, &hello))
	require.Equal(t, uint64(magicNBD), hello.Magic)
	require.NoError(t, binary.Write(c, binary.BigEndian, uint32(flagFixedNewstyle|flagNoZeroes)))
	writeAll(t, c, uint64(magicOpt), uint32(optExportName), uint32(len(export)))
	_, err = c.Write([]byte(export))
	require.NoError(t, err)
	var size uint64
	var flags uint16
	require.NoError(t, binary.Read(c, binary.BigEndian, &size))
	require.NoError(t, binary.Read(c, binary.BigEndian, &flags))
	require.NotZero(t, flags&tflagReadOnly, "exports are read-only")
	return &client{t, c}, int64(size)
}

func writeAll(t *testing.T, w io.Writer, vals ...any) {
	t.Helper()
	for _, v := range vals {
		require.NoError(t, binary.Write(w, binary.BigEndian, v))
	}
}

func (cl *client) request(typ uint16, off uint64, length uint32, payload []byte) (errno uint32, data []byte) {
	writeAll(cl.t, cl.c, uint32(magicRequest), uint16(0), typ, uint64(7), off, length)
	if payload != nil {
		_, err := cl.c.Write(payload)
		require.NoError(cl.t, err)
	}
	var rep struct {
		Magic, Errno uint32
		Handle       uint64
	}
	require.NoError(cl.t, binary.Read(cl.c, binary.BigEndian, &rep))
	require.Equal(cl.t, uint32(magicSimpleRepl), rep.Magic)
	require.Equal(cl.t, uint64(7), rep.Handle)
	if rep.Errno == 0 && typ == cmdRead {
		data = make([]byte, length)
		_, err := io.ReadFull(cl.c, data)
		require.NoError(cl.t, err)
	}
	return rep.Errno, data
}

func TestRequests(t *testing.T) {
	data := randomBytes(10000, 2)
	exps := newMemExports(map[string][]byte{"v": data})
	addr := serve(t, exps)
	cl, size := dial(t, addr, "v")
	require.Equal(t, int64(len(data)), size)

	errno, got := cl.request(cmdRead, 9000, 1000, nil)
	assert.Zero(t, errno)
	assert.Equal(t, data[9000:], got, "read up to the end")

	errno, _ = cl.request(cmdRead, 9001, 1000, nil)
	assert.Equal(t, uint32(errInval), errno, "read past the end")
	errno, _ = cl.request(cmdRead, 1<<62, 1, nil)
	assert.Equal(t, uint32(errInval), errno, "offset far past the end")
	errno, _ = cl.request(cmdWrite, 0, 3, []byte("abc"))
	assert.Equal(t, uint32(errPerm), errno, "writes are refused")
	errno, _ = cl.request(cmdTrim, 0, 3, nil)
	assert.Equal(t, uint32(errPerm), errno, "trims are refused")
	errno, _ = cl.request(cmdFlush, 0, 0, nil)
	assert.Zero(t, errno)
	errno, got = cl.request(cmdRead, 0, 16, nil)
	assert.Zero(t, errno, "the connection survives refused requests")
	assert.Equal(t, data[:16], got)
	writeAll(t, cl.c, uint32(magicRequest), uint16(0), uint16(cmdDisc), uint64(1), uint64(0), uint32(0))
	_, err := cl.c.Read(make([]byte, 1))
	assert.ErrorIs(t, err, io.EOF, "server closes after DISC")
	exps.requireAllClosed(t)
}

func TestBadClientsDoNotHurtTheServer(t *testing.T) {
	addr := serve(t, newMemExports(map[string][]byte{"v": []byte("data")}))
	for _, junk := range [][]byte{
		nil,
		{0, 0, 0, 0},                      // not fixed newstyle
		[]byte("\x00\x00\x00\x03garbage"), // bad option magic
		append([]byte{0, 0, 0, 3}, binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint64(nil, magicOpt), optGo), 1<<30)...), // huge option
	} {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		_, err = io.ReadFull(c, make([]byte, 18))
		require.NoError(t, err)
		c.Write(junk)
		c.(*net.TCPConn).CloseWrite() // a truncated option must not hang the server
		if junk != nil {
			_, err = io.ReadAll(c) // the server hangs up
			assert.NoError(t, err)
		}
		c.Close()
	}
	cl, _ := dial(t, addr, "v")
	_, got := cl.request(cmdRead, 0, 4, nil)
	assert.Equal(t, "data", string(got), "still serving")
}
