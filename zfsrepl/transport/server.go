package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/cairn-backup/cairn/zfsrepl"
	"github.com/cairn-backup/cairn/zfsrepl/zfs"
)

// Server is a sink: it serves the Receiver of each client identity.
type Server struct {
	// Receivers returns the Receiver of an identity; SinkReceivers builds
	// the usual one (root_fs/<identity>).
	Receivers func(identity string) (zfsrepl.Receiver, error)
	// Logger gets one line per request (never stream contents or keys); nil discards.
	Logger *slog.Logger
}

// IdentityFunc maps a request to the client's identity, or refuses it.
type IdentityFunc func(r *http.Request) (string, error)

// CNIdentity identifies a TLS client by its verified certificate's CN,
// accepting only the listed CNs.
func CNIdentity(allowed []string) IdentityFunc {
	return func(r *http.Request) (string, error) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			return "", errors.New("no client certificate")
		}
		cn := r.TLS.PeerCertificates[0].Subject.CommonName
		if !slices.Contains(allowed, cn) {
			return "", fmt.Errorf("client certificate CN %q is not listed", cn)
		}
		return cn, nil
	}
}

// IPIdentity identifies a TCP client by its IP address (map from IP to
// identity).
func IPIdentity(clients map[string]string) IdentityFunc {
	norm := map[string]string{}
	for ip, id := range clients {
		if p := net.ParseIP(ip); p != nil {
			norm[p.String()] = id
		}
	}
	return func(r *http.Request) (string, error) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			return "", err
		}
		ip := net.ParseIP(host)
		if ip == nil {
			return "", fmt.Errorf("bad remote address %q", r.RemoteAddr)
		}
		if id, ok := norm[ip.String()]; ok {
			return id, nil
		}
		if v4 := ip.To4(); v4 != nil {
			if id, ok := norm[v4.String()]; ok {
				return id, nil
			}
		}
		return "", fmt.Errorf("client address %s is not listed", ip)
	}
}

// FixedIdentity gives every request the same identity (in-process transport).
func FixedIdentity(id string) IdentityFunc {
	return func(*http.Request) (string, error) { return id, nil }
}

// Handler returns the sink's HTTP handler, identifying clients with identify.
func (s *Server) Handler(identify IdentityFunc) http.Handler {
	mux := http.NewServeMux()
	h := func(pattern string, fn func(ctx context.Context, recv zfsrepl.Receiver, w http.ResponseWriter, r *http.Request) (any, error)) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			log := s.logger().With("method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
			id, err := identify(r)
			if err != nil {
				log.Warn("client refused", "err", err)
				writeError(w, http.StatusForbidden, fmt.Errorf("%w: %w", ErrRefused, err))
				return
			}
			log = log.With("client", id)
			recv, err := s.Receivers(id)
			if err != nil {
				log.Warn("client refused", "err", err)
				writeError(w, statusOf(err), err)
				return
			}
			res, err := fn(r.Context(), recv, w, r)
			if err != nil {
				log.Warn("request failed", "err", err, "duration", time.Since(start))
				writeError(w, statusOf(err), err)
				return
			}
			log.Debug("request done", "duration", time.Since(start))
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(res)
		})
	}
	h("GET /v1/filesystems", func(ctx context.Context, recv zfsrepl.Receiver, _ http.ResponseWriter, _ *http.Request) (any, error) {
		fss, err := recv.ListFilesystems(ctx)
		return map[string]any{"filesystems": fss}, err
	})
	h("GET /v1/versions", func(ctx context.Context, recv zfsrepl.Receiver, _ http.ResponseWriter, r *http.Request) (any, error) {
		fs := r.URL.Query().Get("fs")
		if err := ValidateWireName(fs); err != nil {
			return nil, err
		}
		vs, err := recv.ListVersions(ctx, fs)
		return map[string]any{"versions": vs}, err
	})
	h("GET /v1/resume-token", func(ctx context.Context, recv zfsrepl.Receiver, _ http.ResponseWriter, r *http.Request) (any, error) {
		fs := r.URL.Query().Get("fs")
		if err := ValidateWireName(fs); err != nil {
			return nil, err
		}
		tok, err := recv.ResumeToken(ctx, fs)
		return map[string]any{"token": tok}, err
	})
	h("POST /v1/destroy", func(ctx context.Context, recv zfsrepl.Receiver, _ http.ResponseWriter, r *http.Request) (any, error) {
		var req destroyRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 16<<20)).Decode(&req); err != nil {
			return nil, fmt.Errorf("%w: bad destroy request: %w", ErrRefused, err)
		}
		if err := ValidateWireName(req.Filesystem); err != nil {
			return nil, err
		}
		for _, v := range req.Snapshots {
			if v.Type != zfs.Snapshot {
				return nil, fmt.Errorf("%w: %s is not a snapshot", ErrRefused, v.RelName())
			}
			if err := zfs.ValidateComponent(v.Name); err != nil {
				return nil, fmt.Errorf("%w: %w", ErrRefused, err)
			}
		}
		return struct{}{}, recv.DestroySnapshots(ctx, req.Filesystem, req.Snapshots)
	})
	h("POST /v1/receive", s.receive)
	return mux
}

type destroyRequest struct {
	Filesystem string        `json:"filesystem"`
	Snapshots  []zfs.Version `json:"snapshots"`
}

func (s *Server) receive(ctx context.Context, recv zfsrepl.Receiver, _ http.ResponseWriter, r *http.Request) (any, error) {
	raw, err := base64.RawURLEncoding.DecodeString(r.Header.Get(HeaderReceive))
	if err != nil {
		return nil, fmt.Errorf("%w: bad %s header: %w", ErrRefused, HeaderReceive, err)
	}
	var req zfsrepl.ReceiveRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		return nil, fmt.Errorf("%w: bad %s header: %w", ErrRefused, HeaderReceive, err)
	}
	if err := validateRequest(req); err != nil {
		return nil, err
	}
	body := &countingReader{r: r.Body}
	var stream io.Reader = body
	switch enc := r.Header.Get(HeaderEncoding); enc {
	case EncodingZstd:
		dec, err := zstd.NewReader(body, zstd.WithDecoderConcurrency(2), zstd.WithDecoderMaxWindow(64<<20))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		defer dec.Close()
		stream = dec
	case EncodingChunked:
		cr, err := newChunkReader(body)
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		defer cr.Close()
		stream = cr
	case EncodingNone, "":
	default:
		return nil, fmt.Errorf("%w: unknown encoding %q", ErrRefused, enc)
	}
	// The receive outlives a cancelled request on purpose: a cut connection
	// ends the stream (a read error), and zfs receive -s then keeps the
	// partial state for a resume instead of being killed.
	n := &countingReader{r: stream}
	if err := recv.Receive(context.WithoutCancel(ctx), req, n); err != nil {
		return nil, err
	}
	s.logger().Info("received", "fs", req.Filesystem, "step", req.Step.String(), "bytes", n.n.Load(), "wire_bytes", body.n.Load())
	return map[string]any{"bytes": n.n.Load()}, nil
}

func (s *Server) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrRefused), errors.Is(err, zfs.ErrInvalidName):
		return http.StatusBadRequest
	default:
		return http.StatusInternalServerError
	}
}

func writeError(w http.ResponseWriter, status int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}

// TLSServerConfig configures a sink's TLS listener (zrepl's serve: type tls).
type TLSServerConfig struct {
	// CA verifies client certificates.
	CA *x509.CertPool
	// Cert is the server's certificate and key.
	Cert tls.Certificate
	// ClientCNs lists the accepted client identities.
	ClientCNs []string
}

// NewTLSServer returns an HTTP/2 server with mutual TLS: a client without a
// certificate signed by CA fails the handshake, and so does one whose CN is
// not listed. Serve it with ServeTLS(l, "", "").
func NewTLSServer(s *Server, c TLSServerConfig) (*http.Server, error) {
	if c.CA == nil {
		return nil, errors.New("transport: a TLS sink needs a CA for client certificates")
	}
	if len(c.ClientCNs) == 0 {
		return nil, errors.New("transport: a TLS sink needs a list of client CNs")
	}
	for _, cn := range c.ClientCNs {
		if err := ValidateIdentity(cn); err != nil {
			return nil, fmt.Errorf("transport: client_cns: %w", err)
		}
	}
	cns := slices.Clone(c.ClientCNs)
	tc := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{c.Cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    c.CA,
		NextProtos:   []string{"h2"},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no client certificate")
			}
			if cn := cs.PeerCertificates[0].Subject.CommonName; !slices.Contains(cns, cn) {
				return fmt.Errorf("client certificate CN %q is not listed", cn)
			}
			return nil
		},
	}
	var p http.Protocols
	p.SetHTTP2(true)
	return &http.Server{
		Handler:           s.Handler(CNIdentity(cns)),
		TLSConfig:         tc,
		Protocols:         &p,
		HTTP2:             http2Config(),
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.logger().Handler(), slog.LevelWarn),
	}, nil
}

// NewTCPServer returns an HTTP/2 (prior knowledge, unencrypted) server that
// identifies clients by their IP address (zrepl's serve: type tcp).
func NewTCPServer(s *Server, clients map[string]string) (*http.Server, error) {
	if len(clients) == 0 {
		return nil, errors.New("transport: a TCP sink needs a map of client IPs")
	}
	for ip, id := range clients {
		if net.ParseIP(ip) == nil {
			return nil, fmt.Errorf("transport: clients: %q is not an IP address", ip)
		}
		if err := ValidateIdentity(id); err != nil {
			return nil, fmt.Errorf("transport: clients: %w", err)
		}
	}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:           s.Handler(IPIdentity(clients)),
		Protocols:         &p,
		HTTP2:             http2Config(),
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.logger().Handler(), slog.LevelWarn),
	}, nil
}
