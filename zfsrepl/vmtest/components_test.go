package vmtest

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/cairn-backup/cairn/zfsrepl/transport/transporttest"
)

// TestComponentThroughput measures, in the guest, what each layer of the
// transport costs (set CAIRN_ZREPL_COMPONENTS=1): it explains the benchmark's
// figures and asserts nothing.
func TestComponentThroughput(t *testing.T) {
	if os.Getenv("CAIRN_ZREPL_COMPONENTS") != "1" {
		t.Skip("set CAIRN_ZREPL_COMPONENTS=1")
	}
	const size = 64 << 20
	data := make([]byte, size)
	r := rand.NewChaCha8([32]byte{1})
	r.Read(data)
	rate := func(name string, d time.Duration) {
		fmt.Printf("COMPONENT %-28s %8.1f MB/s\n", name, float64(size)/(1<<20)/d.Seconds())
	}
	t0 := time.Now()
	_, _ = io.Copy(io.Discard, bytes.NewReader(data))
	rate("memcopy", time.Since(t0))

	for _, lvl := range []zstd.EncoderLevel{zstd.SpeedFastest} {
		var buf bytes.Buffer
		t0 = time.Now()
		zw, _ := zstd.NewWriter(&buf, zstd.WithEncoderLevel(lvl), zstd.WithEncoderConcurrency(2), zstd.WithWindowSize(4<<20))
		zw.Write(data)
		zw.Close()
		rate("zstd encode fastest", time.Since(t0))
		t0 = time.Now()
		zr, _ := zstd.NewReader(&buf, zstd.WithDecoderConcurrency(2))
		io.Copy(io.Discard, zr)
		zr.Close()
		rate("zstd decode", time.Since(t0))
	}
	key := make([]byte, 32)
	blk, _ := aes.NewCipher(key)
	gcm, _ := cipher.NewGCM(blk)
	nonce := make([]byte, 12)
	out := make([]byte, 0, 16<<10+16)
	t0 = time.Now()
	for off := 0; off < size; off += 16 << 10 {
		out = gcm.Seal(out[:0], nonce, data[off:off+16<<10], nil)
	}
	rate("aes-256-gcm seal", time.Since(t0))
	cc, _ := chacha20poly1305.New(key)
	t0 = time.Now()
	for off := 0; off < size; off += 16 << 10 {
		out = cc.Seal(out[:0], nonce, data[off:off+16<<10], nil)
	}
	rate("chacha20-poly1305 seal", time.Since(t0))

	// TCP loopback, raw.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	go func() {
		c, _ := l.Accept()
		io.Copy(io.Discard, c)
		c.Close()
	}()
	c, _ := net.Dial("tcp", l.Addr().String())
	t0 = time.Now()
	io.Copy(c, bytes.NewReader(data))
	c.Close()
	rate("tcp loopback (send side)", time.Since(t0))
	l.Close()

	// HTTP/2 over TLS, POST body, no compression.
	ca := transporttest.NewCA(t, "ca")
	done := make(chan struct{}, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		done <- struct{}{}
	})
	for _, tlsOn := range []bool{true, false} {
		var p http.Protocols
		srv := &http.Server{Handler: h, HTTP2: &http.HTTP2Config{MaxReceiveBufferPerConnection: 4<<20 - 1, MaxReceiveBufferPerStream: 4<<20 - 1, MaxReadFrameSize: 1 << 20}, Protocols: &p}
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		tr := &http.Transport{Protocols: &p, HTTP2: srv.HTTP2}
		url := "http://" + l.Addr().String()
		if tlsOn {
			p.SetHTTP2(true)
			srv.TLSConfig = testTLSServer(t, ca)
			go srv.ServeTLS(l, "", "")
			tr.TLSClientConfig = testTLSClient(t, ca)
			tr.ForceAttemptHTTP2 = true
			url = "https://" + l.Addr().String()
		} else {
			p.SetUnencryptedHTTP2(true)
			go srv.Serve(l)
		}
		req, _ := http.NewRequestWithContext(context.Background(), "POST", url, io.NopCloser(bytes.NewReader(data)))
		if tlsOn && os.Getenv("CAIRN_ZREPL_PROFILE") != "" {
			pf, _ := os.Create(os.Getenv("CAIRN_ZREPL_PROFILE"))
			pprof.StartCPUProfile(pf)
			defer func() { pprof.StopCPUProfile(); pf.Close(); t.Error("profile written: failing to keep the share dir") }()
		}
		t0 = time.Now()
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		<-done
		rate(fmt.Sprintf("http2 tls=%v", tlsOn), time.Since(t0))
		srv.Close()
	}
	// A pipe through cat, as zfs send | zfs recv has.
	t0 = time.Now()
	cmd := exec.Command("sh", "-c", "cat > /dev/null")
	cmd.Stdin = bytes.NewReader(data)
	cmd.Run()
	rate("pipe to cat", time.Since(t0))
}
