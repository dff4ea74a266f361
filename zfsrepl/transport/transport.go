// Package transport carries a zfsrepl.Receiver between a push job (the
// client) and a sink (the server).
//
// The sink serves HTTP/2: over TLS with mutual authentication (NewTLSServer:
// the client's identity is its certificate's CN, accepted only if listed),
// over plain TCP (NewTCPServer: the identity comes from a configured map of
// client IP addresses; HTTP/2 with prior knowledge), or in process
// (InProcess, for tests). Each identity gets its own Receiver, in a sink
// confined to root_fs/<identity> (see SinkReceivers); the server also refuses
// wire names that could escape it.
//
// Control requests (list filesystems and versions, resume token, destroy
// snapshots) and send streams share one connection as HTTP/2 streams. A send
// stream is zstd-compressed on the wire (EncodingChunked: chunks that zstd
// cannot shrink go as they are) unless it is a raw (encrypted) send.
//
// Wire protocol (version 1), all JSON except the stream body:
//
//	GET  /v1/filesystems              -> {"filesystems": [zfs.Filesystem]}
//	GET  /v1/versions?fs=NAME         -> {"versions": [zfs.Version]}
//	GET  /v1/resume-token?fs=NAME     -> {"token": "..."}
//	POST /v1/destroy   {"filesystem", "snapshots": [zfs.Version]} -> {}
//	POST /v1/receive   Cairn-Receive: base64url(JSON zfsrepl.ReceiveRequest)
//	                   Cairn-Encoding: zstd-chunked | zstd | identity; body: the stream -> {"bytes": N}
//
// Errors are {"error": "..."} with status 400 (refused request), 403 (unknown
// identity), 404 or 500.
package transport

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/zfsrepl"
	"github.com/cairn-backup/cairn/zfsrepl/zfs"
)

// Header names and encodings of the receive request.
const (
	HeaderReceive  = "Cairn-Receive"  // base64url(JSON zfsrepl.ReceiveRequest)
	HeaderEncoding = "Cairn-Encoding" // the body's encoding
	EncodingZstd   = "zstd"           // one zstd stream (accepted; clients send EncodingChunked)
	EncodingNone   = "identity"       // the stream as it is (raw sends)
)

// HTTP/2 flow-control windows: large enough that a stream is not throttled by
// the round trip (the stdlib allows just under 4 MiB).
const (
	connWindow   = 4<<20 - 1
	streamWindow = 4<<20 - 1
	maxFrame     = 1 << 20
)

func http2Config() *http.HTTP2Config {
	return &http.HTTP2Config{
		MaxReceiveBufferPerConnection: connWindow,
		MaxReceiveBufferPerStream:     streamWindow,
		MaxReadFrameSize:              maxFrame,
		// A peer that vanished without closing (a cut network) is noticed
		// by pings: the sink's receive then ends and keeps its resume token.
		SendPingTimeout: 30 * time.Second,
		PingTimeout:     30 * time.Second,
	}
}

// ErrRefused is wrapped by errors for requests the sink refused (bad names,
// unknown identity).
var ErrRefused = errors.New("refused by the sink")

// RemoteError is an error the sink returned.
type RemoteError struct {
	Status  int
	Message string
}

// Error returns the sink's message and status.
func (e *RemoteError) Error() string {
	return fmt.Sprintf("sink: %s (HTTP %d)", e.Message, e.Status)
}

// Unwrap returns ErrRefused for 400 and 403 answers.
func (e *RemoteError) Unwrap() error {
	if e.Status == http.StatusBadRequest || e.Status == http.StatusForbidden {
		return ErrRefused
	}
	return nil
}

// ValidateWireName checks a filesystem name from the wire: relative, no
// "..", '@', '#', control characters; the rules of zfs.ValidateRelativePath.
func ValidateWireName(fs string) error {
	if err := zfs.ValidateRelativePath(fs); err != nil {
		return fmt.Errorf("%w: %w", ErrRefused, err)
	}
	return nil
}

// validateRequest checks every name of a receive request.
func validateRequest(req zfsrepl.ReceiveRequest) error {
	if err := ValidateWireName(req.Filesystem); err != nil {
		return err
	}
	switch req.Step.Kind {
	case zfsrepl.StepFull, zfsrepl.StepIncremental, zfsrepl.StepResume:
	default:
		return fmt.Errorf("%w: unknown step kind %q", ErrRefused, req.Step.Kind)
	}
	if err := zfs.ValidateComponent(req.Step.To.Name); err != nil || strings.ContainsAny(req.Step.To.Name, "@#/") {
		return fmt.Errorf("%w: snapshot name %q", ErrRefused, req.Step.To.Name)
	}
	if req.Step.From != nil {
		if err := zfs.ValidateComponent(req.Step.From.Name); err != nil {
			return fmt.Errorf("%w: from name %q", ErrRefused, req.Step.From.Name)
		}
	}
	return nil
}

// SinkReceivers returns the Receiver factory of a sink: the identity is
// received below rootFS/<identity>, as zrepl's sink job does, with the
// last-received hold of job.
func SinkReceivers(runner *zfs.Runner, rootFS, job string) func(identity string) (zfsrepl.Receiver, error) {
	return func(identity string) (zfsrepl.Receiver, error) {
		if err := ValidateIdentity(identity); err != nil {
			return nil, err
		}
		root := rootFS + "/" + identity
		if err := zfs.ValidateFilesystem(root); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrRefused, err)
		}
		return &zfsrepl.LocalReceiver{ZFS: runner, Root: root, Job: job}, nil
	}
}

// ValidateIdentity checks that a client identity is one dataset name
// component.
func ValidateIdentity(identity string) error {
	if err := zfs.ValidateComponent(identity); err != nil {
		return fmt.Errorf("%w: client identity: %w", ErrRefused, err)
	}
	return nil
}
