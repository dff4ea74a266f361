package transport

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/cairn-backup/cairn/zfsrepl"
	"github.com/cairn-backup/cairn/zfsrepl/zfs"
)

// Client is a push job's view of a sink: a zfsrepl.Receiver over HTTP/2.
type Client struct {
	base string
	hc   *http.Client
	// Compress selects zstd on the wire for non-raw streams (default true).
	compress bool
	close    func()
}

// ClientOptions are the knobs shared by every transport.
type ClientOptions struct {
	// DialContext replaces the dialer (tests cut connections with it).
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// NoCompression sends streams without zstd.
	NoCompression bool
}

var _ zfsrepl.Receiver = (*Client)(nil)

// TLSClientConfig configures a push job's TLS connection (zrepl's connect:
// type tls).
type TLSClientConfig struct {
	// CA verifies the sink's certificate.
	CA *x509.CertPool
	// Cert is the client's certificate (its CN is the identity) and key.
	Cert tls.Certificate
	// ServerName is the CN/SAN expected of the sink (zrepl's server_cn).
	ServerName string
}

// NewTLSClient connects to a sink at addr ("host:port") over HTTP/2 with
// mutual TLS. Connections are made lazily and reused.
func NewTLSClient(addr string, c TLSClientConfig, o ClientOptions) (*Client, error) {
	if c.CA == nil {
		return nil, errors.New("transport: a TLS client needs the sink's CA")
	}
	tc := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		RootCAs:      c.CA,
		Certificates: []tls.Certificate{c.Cert},
		ServerName:   c.ServerName,
		NextProtos:   []string{"h2"},
	}
	var p http.Protocols
	p.SetHTTP2(true)
	tr := &http.Transport{
		TLSClientConfig:   tc,
		ForceAttemptHTTP2: true,
		Protocols:         &p,
		HTTP2:             http2Config(),
		DialContext:       o.DialContext,
	}
	return newClient("https://"+addr, tr, o), nil
}

// NewTCPClient connects to a sink at addr over unencrypted HTTP/2 (the sink
// identifies the client by its address).
func NewTCPClient(addr string, o ClientOptions) *Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p, HTTP2: http2Config(), DialContext: o.DialContext}
	return newClient("http://"+addr, tr, o)
}

func newClient(base string, tr *http.Transport, o ClientOptions) *Client {
	return &Client{base: base, hc: &http.Client{Transport: tr}, compress: !o.NoCompression, close: tr.CloseIdleConnections}
}

// InProcess connects a client to s through an in-memory pipe, as identity,
// with the same wire protocol as the network transports. Close the client to
// stop the server.
func InProcess(s *Server, identity string, o ClientOptions) *Client {
	l := newPipeListener()
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: s.Handler(FixedIdentity(identity)), Protocols: &p, HTTP2: http2Config()}
	go func() { _ = srv.Serve(l) }()
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) { return l.dial(ctx) }
	if o.DialContext != nil {
		inner := o.DialContext
		dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := l.dial(ctx)
			if err != nil {
				return nil, err
			}
			return inner(context.WithValue(ctx, pipeConnKey{}, c), network, addr)
		}
	}
	tr := &http.Transport{Protocols: &p, HTTP2: http2Config(), DialContext: dial}
	c := newClient("http://in-process", tr, o)
	c.close = func() { tr.CloseIdleConnections(); _ = srv.Close() }
	return c
}

// pipeConnKey carries the in-process connection to a wrapping DialContext:
// PipeConn(ctx) returns it.
type pipeConnKey struct{}

// PipeConn returns the in-process connection being dialled, for a
// ClientOptions.DialContext that wraps it (tests).
func PipeConn(ctx context.Context) net.Conn {
	c, _ := ctx.Value(pipeConnKey{}).(net.Conn)
	return c
}

// Close releases the client's idle connections (and the in-process server).
func (c *Client) Close() error {
	if c.close != nil {
		c.close()
	}
	return nil
}

func (c *Client) do(req *http.Request, out any) error {
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", req.Method, req.URL.Path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		if json.Unmarshal(body, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(body))
		}
		return &RemoteError{Status: resp.StatusCode, Message: e.Error}
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			return fmt.Errorf("%s %s: bad answer: %w", req.Method, req.URL.Path, err)
		}
	}
	return nil
}

func (c *Client) get(ctx context.Context, path string, q url.Values, out any) error {
	u := c.base + path
	if q != nil {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	return c.do(req, out)
}

// ListFilesystems implements zfsrepl.Receiver.
func (c *Client) ListFilesystems(ctx context.Context) ([]zfs.Filesystem, error) {
	var res struct{ Filesystems []zfs.Filesystem }
	err := c.get(ctx, "/v1/filesystems", nil, &res)
	return res.Filesystems, err
}

// ListVersions implements zfsrepl.Receiver.
func (c *Client) ListVersions(ctx context.Context, fs string) ([]zfs.Version, error) {
	var res struct{ Versions []zfs.Version }
	err := c.get(ctx, "/v1/versions", url.Values{"fs": {fs}}, &res)
	return res.Versions, err
}

// ResumeToken implements zfsrepl.Receiver.
func (c *Client) ResumeToken(ctx context.Context, fs string) (string, error) {
	var res struct{ Token string }
	err := c.get(ctx, "/v1/resume-token", url.Values{"fs": {fs}}, &res)
	return res.Token, err
}

// DestroySnapshots implements zfsrepl.Receiver.
func (c *Client) DestroySnapshots(ctx context.Context, fs string, snaps []zfs.Version) error {
	b, err := json.Marshal(destroyRequest{Filesystem: fs, Snapshots: snaps})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/v1/destroy", bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	return c.do(req, nil)
}

// Receive implements zfsrepl.Receiver: it streams to the sink, zstd-compressed
// unless the step is raw. A read error of stream aborts the request, and the
// sink keeps the partial receive for a resume.
func (c *Client) Receive(ctx context.Context, rr zfsrepl.ReceiveRequest, stream io.Reader) error {
	hdr, err := json.Marshal(rr)
	if err != nil {
		return err
	}
	pr, pw := io.Pipe()
	enc := EncodingNone
	if c.compress && !rr.Step.Raw {
		enc = EncodingChunked
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		pw.CloseWithError(writeStream(pw, stream, enc))
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/v1/receive", pr)
	if err != nil {
		pr.Close()
		wg.Wait()
		return err
	}
	req.Header.Set(HeaderReceive, base64.RawURLEncoding.EncodeToString(hdr))
	req.Header.Set(HeaderEncoding, enc)
	req.Header.Set("Content-Type", "application/octet-stream")
	err = c.do(req, nil)
	// Stop the writer if the sink answered before the end of the stream.
	pr.CloseWithError(errors.New("transport: request finished"))
	wg.Wait()
	return err
}

// writeStream copies stream into w in the encoding enc.
func writeStream(w io.Writer, stream io.Reader, enc string) error {
	switch enc {
	case EncodingChunked:
		cw, err := newChunkWriter(w)
		if err != nil {
			return err
		}
		_, err = cw.ReadFrom(stream)
		return err
	case EncodingZstd:
	default:
		_, err := io.CopyBuffer(w, stream, make([]byte, 1<<20))
		return err
	}
	zw, err := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(2),
		zstd.WithWindowSize(4<<20))
	if err != nil {
		return err
	}
	if _, err := io.CopyBuffer(zw, stream, make([]byte, 1<<20)); err != nil {
		zw.Close()
		return err
	}
	return zw.Close()
}

// pipeListener is a net.Listener of in-memory connections.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) dial(ctx context.Context) (net.Conn, error) {
	c1, c2 := net.Pipe()
	select {
	case l.conns <- c2:
		return c1, nil
	case <-l.done:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "in-process" }
