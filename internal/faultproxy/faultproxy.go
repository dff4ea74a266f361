// Package faultproxy is a test-only HTTP reverse proxy that injects faults
// between a client and a server: error responses, dropped connections, cut-off
// bodies, lost responses and slow responses, at a configurable rate.
//
// It keeps the client's Host header, so requests signed for the proxy's
// address (AWS SigV4) are still valid at the server behind it.
package faultproxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Fault is a kind of injected failure.
type Fault int

// The faults the proxy injects.
const (
	// Error5xx answers 500, 502 or 503 (with an S3-style XML error body)
	// without forwarding the request.
	Error5xx Fault = iota
	// Drop closes the connection without forwarding the request or answering.
	Drop
	// LostResponse forwards the request, so the server acts on it, then
	// closes the connection instead of returning the server's response.
	LostResponse
	// Truncate forwards the request and returns the response's headers and
	// the first half of its body, then closes the connection.
	Truncate
	// Slow forwards the request after waiting Config.SlowDelay (or until the
	// client gives up).
	Slow
	numFaults
)

// AllFaults lists every kind of fault.
var AllFaults = []Fault{Error5xx, Drop, LostResponse, Truncate, Slow}

// String names the fault.
func (f Fault) String() string {
	switch f {
	case Error5xx:
		return "5xx"
	case Drop:
		return "drop"
	case LostResponse:
		return "lost-response"
	case Truncate:
		return "truncate"
	case Slow:
		return "slow"
	}
	return "fault(" + strconv.Itoa(int(f)) + ")"
}

// Config sets what the proxy injects.
type Config struct {
	Rate      float64       // fraction of requests, 0 to 1, that get a fault
	Faults    []Fault       // the kinds chosen from, uniformly; nil means AllFaults
	SlowDelay time.Duration // how long Slow waits; 0 means one second
	// Match, when set, limits faults to the requests it accepts.
	Match func(*http.Request) bool
}

// Proxy is a running fault-injecting proxy.
type Proxy struct {
	// URL is the proxy's base URL, to use as the client's endpoint.
	URL string

	srv    *httptest.Server
	done   chan struct{} // closed by Close, to end slow handlers
	rp     *httputil.ReverseProxy
	mu     sync.Mutex
	cfg    Config
	counts [numFaults + 1]atomic.Int64 // the last one counts clean requests
}

// New starts a proxy in front of target (a base URL such as
// http://127.0.0.1:7480).
func New(target string, cfg Config) (*Proxy, error) {
	tu, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("faultproxy: bad target: %w", err)
	}
	p := &Proxy{done: make(chan struct{})}
	p.Set(cfg)
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(tu)
			pr.Out.Host = pr.In.Host // the signature covers the Host header
		},
		ErrorLog: log.New(io.Discard, "", 0), // injected faults are expected
		ModifyResponse: func(resp *http.Response) error {
			if resp.Request.Context().Value(truncateKey{}) != nil && resp.ContentLength > 1 {
				resp.Body = &cutReader{r: resp.Body, left: resp.ContentLength / 2}
			}
			return nil
		},
	}
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(p.serve))
	p.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	p.srv.Start()
	p.URL = p.srv.URL
	return p, nil
}

// Set replaces the proxy's configuration; requests already in flight keep the
// fault they were given.
func (p *Proxy) Set(cfg Config) {
	if cfg.Faults == nil {
		cfg.Faults = AllFaults
	}
	if cfg.SlowDelay == 0 {
		cfg.SlowDelay = time.Second
	}
	p.mu.Lock()
	p.cfg = cfg
	p.mu.Unlock()
}

// Counts returns how many requests got each fault, and how many none.
func (p *Proxy) Counts() (faults map[Fault]int64, clean int64) {
	faults = map[Fault]int64{}
	for f := range numFaults {
		if n := p.counts[f].Load(); n > 0 {
			faults[f] = n
		}
	}
	return faults, p.counts[numFaults].Load()
}

// Close stops the proxy and closes its connections.
func (p *Proxy) Close() {
	close(p.done)
	p.srv.CloseClientConnections()
	p.srv.Close()
}

type truncateKey struct{}

// cutReader ends its body with an error after left bytes.
type cutReader struct {
	r    io.ReadCloser
	left int64
}

func (c *cutReader) Read(b []byte) (int, error) {
	if c.left <= 0 {
		return 0, fmt.Errorf("faultproxy: body cut off")
	}
	if int64(len(b)) > c.left {
		b = b[:c.left]
	}
	n, err := c.r.Read(b)
	c.left -= int64(n)
	return n, err
}

func (c *cutReader) Close() error { return c.r.Close() }

func (p *Proxy) pick(r *http.Request) (Fault, time.Duration) {
	p.mu.Lock()
	cfg := p.cfg
	p.mu.Unlock()
	if rand.Float64() >= cfg.Rate || len(cfg.Faults) == 0 || (cfg.Match != nil && !cfg.Match(r)) {
		return numFaults, 0
	}
	return cfg.Faults[rand.IntN(len(cfg.Faults))], cfg.SlowDelay
}

// hangUp closes the client's connection without a response.
func hangUp(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			conn.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}

// discardWriter swallows a response.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(int)             {}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	f, delay := p.pick(r)
	p.counts[f].Add(1)
	switch f {
	case Error5xx:
		io.Copy(io.Discard, r.Body)
		codes := []struct {
			status int
			code   string
		}{{500, "InternalError"}, {502, "BadGateway"}, {503, "ServiceUnavailable"}}
		c := codes[rand.IntN(len(codes))]
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(c.status)
		fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>injected by faultproxy</Message></Error>`, c.code)
	case Drop:
		hangUp(w)
	case LostResponse:
		p.rp.ServeHTTP(&discardWriter{h: http.Header{}}, r)
		hangUp(w)
	case Truncate:
		p.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), truncateKey{}, true)))
	case Slow:
		// Read the body first: the server notices a client that hangs up
		// (and cancels r's context) only once the body has been read.
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		case <-p.done:
			return
		}
		p.rp.ServeHTTP(w, r)
	default:
		p.rp.ServeHTTP(w, r)
	}
}
