package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"
)

// fuzzConn is a net.Conn whose client side is a fixed byte string: reads
// come from it (then EOF), writes are kept (up to 1 MiB).
type fuzzConn struct {
	r      *bytes.Reader
	mu     sync.Mutex
	out    bytes.Buffer
	closed bool
}

func (c *fuzzConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return 0, net.ErrClosed
	}
	return c.r.Read(p)
}

func (c *fuzzConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	if c.out.Len() < 1<<20 {
		c.out.Write(p[:min(len(p), 1<<20-c.out.Len())])
	}
	return len(p), nil
}

func (c *fuzzConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	return nil
}

func (c *fuzzConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *fuzzConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *fuzzConn) SetDeadline(time.Time) error      { return nil }
func (c *fuzzConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fuzzConn) SetWriteDeadline(time.Time) error { return nil }
func (c *fuzzConn) output() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.out.Bytes())
}
func (c *fuzzConn) isClosed() bool   { c.mu.Lock(); defer c.mu.Unlock(); return c.closed }
func newFuzzConn(b []byte) *fuzzConn { return &fuzzConn{r: bytes.NewReader(b)} }
func be(vals ...any) []byte {
	var b bytes.Buffer
	for _, v := range vals {
		_ = binary.Write(&b, binary.BigEndian, v)
	}
	return b.Bytes()
}
func opt(o uint32, data []byte) []byte {
	return append(be(uint64(magicOpt), o, uint32(len(data))), data...)
}
func nbdRequest(typ uint16, off uint64, n uint32) []byte {
	return be(uint32(magicRequest), uint16(0), typ, uint64(9), off, n)
}

// serveFuzz runs one connection of a server over the client bytes in and
// checks the invariants of every input: the server returns (a client that
// stops sending never hangs it), closes the connection and every export it
// opened, and opens with its greeting.
func serveFuzz(t *testing.T, in []byte) {
	exps := newMemExports(map[string][]byte{"v": randomBytes(3000, 1), "empty": nil})
	srv := &Server{Exports: exps, Logger: slog.New(slog.DiscardHandler)}
	c := newFuzzConn(in)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.ServeConn(context.Background(), c)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("the server hangs on a client that sent %d bytes and stopped", len(in))
	}
	if !c.isClosed() {
		t.Fatal("connection not closed")
	}
	if n := exps.open.Load(); n != 0 {
		t.Fatalf("%d exports left open", n)
	}
	if out := c.output(); len(out) < 8 || binary.BigEndian.Uint64(out) != magicNBD {
		t.Fatalf("no greeting: %x", out[:min(len(out), 16)])
	}
}

var handshake = be(uint32(flagFixedNewstyle | flagNoZeroes))

// FuzzNegotiation feeds the negotiation phase arbitrary client bytes.
func FuzzNegotiation(f *testing.F) {
	info := func(name string, reqs ...uint16) []byte {
		d := append(be(uint32(len(name))), name...)
		d = append(d, be(uint16(len(reqs)))...)
		for _, r := range reqs {
			d = append(d, be(r)...)
		}
		return d
	}
	f.Add([]byte{})
	f.Add(handshake)
	f.Add(be(uint32(0)))
	f.Add(append(bytes.Clone(handshake), opt(optList, nil)...))
	f.Add(append(bytes.Clone(handshake), opt(optExportName, []byte("v"))...))
	f.Add(append(bytes.Clone(handshake), opt(optExportName, []byte("nope"))...))
	f.Add(append(append(bytes.Clone(handshake), opt(optStructured, nil)...), opt(optGo, info("v", infoExport))...))
	f.Add(append(bytes.Clone(handshake), opt(optInfo, info("v", 1, 2, 3))...))
	f.Add(append(bytes.Clone(handshake), opt(optInfo, []byte{0, 0, 0, 9, 'v'})...))
	f.Add(append(bytes.Clone(handshake), opt(optAbort, nil)...))
	f.Add(append(bytes.Clone(handshake), opt(99, []byte("x"))...))
	f.Add(append(bytes.Clone(handshake), be(uint64(magicOpt), uint32(optGo), uint32(1<<31))...))
	f.Fuzz(func(t *testing.T, in []byte) { serveFuzz(t, in) })
}

// FuzzTransmission negotiates export "v" (3000 bytes), with or without
// structured replies, then feeds the transmission phase arbitrary requests.
func FuzzTransmission(f *testing.F) {
	f.Add(false, []byte{})
	f.Add(false, nbdRequest(cmdRead, 0, 512))
	f.Add(true, nbdRequest(cmdRead, 2999, 1))
	f.Add(false, nbdRequest(cmdRead, 2999, 2))
	f.Add(true, nbdRequest(cmdRead, 1<<63, 1<<31))
	f.Add(false, append(nbdRequest(cmdWrite, 0, 3), "abc"...))
	f.Add(false, nbdRequest(cmdWrite, 0, 1<<30))
	f.Add(true, append(nbdRequest(cmdTrim, 0, 10), nbdRequest(cmdFlush, 0, 0)...))
	f.Add(false, append(nbdRequest(cmdRead, 0, 10), nbdRequest(cmdDisc, 0, 0)...))
	f.Add(false, nbdRequest(77, 0, 0))
	f.Add(true, []byte("\x25\x60\x95\x13\x00"))
	f.Fuzz(func(t *testing.T, structured bool, reqs []byte) {
		in := bytes.Clone(handshake)
		if structured {
			in = append(in, opt(optStructured, nil)...)
		}
		in = append(in, opt(optExportName, []byte("v"))...)
		serveFuzz(t, append(in, reqs...))
	})
}
