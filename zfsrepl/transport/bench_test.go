package transport_test

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net"
	"testing"

	"github.com/cairn-backup/cairn/zfsrepl"
	"github.com/cairn-backup/cairn/zfsrepl/transport"
	"github.com/cairn-backup/cairn/zfsrepl/transport/transporttest"
	"github.com/cairn-backup/cairn/zfsrepl/zfs"
)

// discardReceiver receives streams into io.Discard.
type discardReceiver struct{ zfsrepl.Receiver }

func (discardReceiver) Receive(_ context.Context, _ zfsrepl.ReceiveRequest, r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}

// BenchmarkTLSStream measures the mutual-TLS transport alone, natively (no
// ZFS): a 64 MiB stream from a client to a sink that discards it, random
// (incompressible) or text-like (compressible), with the default encoding.
func BenchmarkTLSStream(b *testing.B) {
	ca := transporttest.NewCA(b, "bench CA")
	srv, err := transport.NewTLSServer(&transport.Server{Receivers: func(string) (zfsrepl.Receiver, error) { return discardReceiver{}, nil }},
		transport.TLSServerConfig{CA: ca.Pool, Cert: ca.Issue(b, "backup", true), ClientCNs: []string{"garage"}})
	if err != nil {
		b.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = srv.ServeTLS(l, "", "") }()
	defer srv.Close()
	c, err := transport.NewTLSClient(l.Addr().String(), transport.TLSClientConfig{CA: ca.Pool, Cert: ca.Issue(b, "garage", false), ServerName: "backup"}, transport.ClientOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	random := make([]byte, 64<<20)
	rand.NewChaCha8([32]byte{5}).Read(random)
	text := bytes.Repeat([]byte("some zfs send payload 0123456789 "), len(random)/33)
	req := zfsrepl.ReceiveRequest{Filesystem: "tank/a", Step: zfsrepl.Step{Kind: zfsrepl.StepFull, To: zfs.Version{Type: zfs.Snapshot, Name: "s", GUID: 1}}}
	for _, d := range []struct {
		name string
		data []byte
	}{{"random", random}, {"text", text}} {
		b.Run(d.name, func(b *testing.B) {
			b.SetBytes(int64(len(d.data)))
			for b.Loop() {
				if err := c.Receive(context.Background(), req, bytes.NewReader(d.data)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
