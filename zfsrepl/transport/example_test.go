package transport_test

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/cairn-backup/cairn/zfsrepl"
	"github.com/cairn-backup/cairn/zfsrepl/transport"
	"github.com/cairn-backup/cairn/zfsrepl/zfs"
)

// printReceiver prints what a sink receives, for the example.
type printReceiver struct {
	zfsrepl.Receiver
	identity string
}

func (p printReceiver) Receive(_ context.Context, rr zfsrepl.ReceiveRequest, r io.Reader) error {
	n, err := io.Copy(io.Discard, r)
	fmt.Printf("%s receives %s@%s: %d bytes\n", p.identity, rr.Filesystem, rr.Step.To.Name, n)
	return err
}

// A sink serves each client identity its own Receiver (SinkReceivers gives
// each one root_fs/<identity>); a Client is the push side's Receiver. The
// in-process transport runs the same protocol as the TLS and TCP ones,
// without a network.
func ExampleInProcess() {
	sink := &transport.Server{Receivers: func(identity string) (zfsrepl.Receiver, error) {
		return printReceiver{identity: identity}, nil
	}}
	c := transport.InProcess(sink, "garage", transport.ClientOptions{})
	defer c.Close()
	req := zfsrepl.ReceiveRequest{Filesystem: "tank/garage", Step: zfsrepl.Step{Kind: zfsrepl.StepFull,
		To: zfs.Version{Type: zfs.Snapshot, Name: "zrepl_20261127_000000_000", GUID: 42}}}
	if err := c.Receive(context.Background(), req, strings.NewReader("a zfs send stream")); err != nil {
		fmt.Println(err)
	}
	// Output: garage receives tank/garage@zrepl_20261127_000000_000: 17 bytes
}
