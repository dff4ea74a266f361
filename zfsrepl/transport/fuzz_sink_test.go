package transport

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/cairn-backup/cairn/zfsrepl"
	"github.com/cairn-backup/cairn/zfsrepl/zfs"
)

// fuzzReceiver records what the sink's handlers pass on; a request that
// reaches it must have passed the sink's validation.
type fuzzReceiver struct {
	mu    sync.Mutex
	calls []string
	bad   error
}

func (f *fuzzReceiver) check(what, fs string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, what)
	if err := zfs.ValidateRelativePath(fs); err != nil && f.bad == nil {
		f.bad = errors.New(what + " reached the receiver with a bad name " + strings.ToValidUTF8(fs, "?") + ": " + err.Error())
	}
}

func (f *fuzzReceiver) ListFilesystems(context.Context) ([]zfs.Filesystem, error) { return nil, nil }
func (f *fuzzReceiver) ListVersions(_ context.Context, fs string) ([]zfs.Version, error) {
	f.check("versions", fs)
	return nil, nil
}
func (f *fuzzReceiver) ResumeToken(_ context.Context, fs string) (string, error) {
	f.check("resume-token", fs)
	return "", nil
}
func (f *fuzzReceiver) Receive(_ context.Context, req zfsrepl.ReceiveRequest, stream io.Reader) error {
	f.check("receive", req.Filesystem)
	if err := validateRequest(req); err != nil {
		f.mu.Lock()
		f.bad = errors.New("an invalid receive request reached the receiver: " + err.Error())
		f.mu.Unlock()
	}
	_, err := io.Copy(io.Discard, io.LimitReader(stream, 1<<20))
	return err
}
func (f *fuzzReceiver) DestroySnapshots(_ context.Context, fs string, snaps []zfs.Version) error {
	f.check("destroy", fs)
	for _, v := range snaps {
		if v.Type != zfs.Snapshot || zfs.ValidateComponent(v.Name) != nil {
			f.mu.Lock()
			f.bad = errors.New("destroy of a non-snapshot or bad name reached the receiver: " + v.Name)
			f.mu.Unlock()
		}
	}
	return nil
}

// FuzzSinkHandler sends arbitrary requests to the sink's HTTP handlers
// (through httptest, no network): no input may panic the sink, get a 5xx
// other than the receiver's own, or reach the receiver with a name the sink
// should have refused.
func FuzzSinkHandler(f *testing.F) {
	zbuf := func(b []byte) []byte {
		enc, _ := zstd.NewWriter(nil)
		return enc.EncodeAll(b, nil)
	}
	recvHdr := func(js string) string { return base64.RawURLEncoding.EncodeToString([]byte(js)) }
	good := `{"filesystem":"pool/a","step":{"kind":"full","to":{"name":"s1","type":"snapshot","guid":1}}}`
	f.Add(uint8(0), "", "", "", []byte(nil))
	f.Add(uint8(1), "pool/a", "", "", []byte(nil))
	f.Add(uint8(1), "../etc", "", "", []byte(nil))
	f.Add(uint8(2), "pool/a@x", "", "", []byte(nil))
	f.Add(uint8(3), "", "", "", []byte(`{"filesystem":"pool/a","snapshots":[{"name":"s1","type":"snapshot","guid":1}]}`))
	f.Add(uint8(3), "", "", "", []byte(`{"filesystem":"pool/a","snapshots":[{"name":"b","type":"bookmark"}]}`))
	f.Add(uint8(4), "", recvHdr(good), EncodingNone, []byte("stream"))
	f.Add(uint8(4), "", recvHdr(good), EncodingZstd, zbuf([]byte("stream")))
	f.Add(uint8(4), "", recvHdr(good), EncodingChunked, []byte("\x00\x00\x00\x05hello"))
	f.Add(uint8(4), "", recvHdr(`{"filesystem":"/abs","step":{"kind":"full","to":{"name":"s"}}}`), "", []byte{})
	f.Add(uint8(4), "", "!!!", "gzip", []byte{1})
	f.Fuzz(func(t *testing.T, route uint8, fs, hdr, enc string, body []byte) {
		rcv := &fuzzReceiver{}
		srv := &Server{Receivers: func(string) (zfsrepl.Receiver, error) { return rcv, nil }}
		h := srv.Handler(FixedIdentity("client"))
		routes := []struct{ method, path string }{
			{"GET", "/v1/filesystems"}, {"GET", "/v1/versions"}, {"GET", "/v1/resume-token"},
			{"POST", "/v1/destroy"}, {"POST", "/v1/receive"}, {"PUT", "/v1/receive"}, {"GET", "/v1/../v1/versions"},
		}
		rt := routes[int(route)%len(routes)]
		req := httptest.NewRequest(rt.method, "http://sink"+rt.path, bytes.NewReader(body))
		req.URL.RawQuery = url.Values{"fs": {fs}}.Encode()
		req.Header.Set(HeaderReceive, hdr)
		req.Header.Set(HeaderEncoding, enc)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if rcv.bad != nil {
			t.Fatal(rcv.bad)
		}
		if w.Code >= 500 && w.Code != http.StatusInternalServerError {
			t.Fatalf("%s %s: status %d", rt.method, rt.path, w.Code)
		}
	})
}
