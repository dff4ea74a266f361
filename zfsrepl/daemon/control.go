package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// serveControl serves status and wakeup on a unix socket at path:
//
//	GET  /status              -> [Status]
//	POST /wakeup?job=NAME     -> {}
//	POST /reset?job=NAME      -> {"aborted": bool}
func (d *Daemon) serveControl(path string) (stop func(), err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	// A socket left by a daemon that died is removed; a live one is not.
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s: another daemon is listening", path)
	}
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, d.Status())
	})
	mux.HandleFunc("POST /wakeup", func(w http.ResponseWriter, r *http.Request) {
		if err := d.Wakeup(r.URL.Query().Get("job")); err != nil {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{})
	})
	mux.HandleFunc("POST /reset", func(w http.ResponseWriter, r *http.Request) {
		aborted, err := d.Reset(r.URL.Query().Get("job"))
		if err != nil {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]bool{"aborted": aborted})
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	return func() { srv.Close(); os.Remove(path) }, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// Control is a client of a daemon's control socket.
type Control struct {
	c *http.Client
}

// NewControl returns a client of the control socket at path.
func NewControl(path string) *Control {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	return &Control{c: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

func (c *Control) do(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://daemon"+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.c.Do(req)
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("control socket: no daemon is listening (is cairn-zrepl daemon running with this config?): %w", err)
	}
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		_ = json.Unmarshal(b, &e)
		if e.Error == "" {
			e.Error = resp.Status
		}
		return errors.New(e.Error)
	}
	return json.Unmarshal(b, out)
}

// Status returns every job's status.
func (c *Control) Status(ctx context.Context) ([]Status, error) {
	var st []Status
	err := c.do(ctx, http.MethodGet, "/status", &st)
	return st, err
}

// Wakeup wakes up a job.
func (c *Control) Wakeup(ctx context.Context, job string) error {
	var out map[string]string
	return c.do(ctx, http.MethodPost, "/wakeup?job="+url.QueryEscape(job), &out)
}

// Reset aborts a job's running run (Daemon.Reset) and reports whether one
// was running.
func (c *Control) Reset(ctx context.Context, job string) (bool, error) {
	var out struct {
		Aborted bool `json:"aborted"`
	}
	err := c.do(ctx, http.MethodPost, "/reset?job="+url.QueryEscape(job), &out)
	return out.Aborted, err
}
