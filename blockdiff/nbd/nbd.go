// Package nbd serves read-only block devices over the Network Block Device
// protocol (fixed newstyle negotiation, simple replies), so that any NBD
// client (qemu-img, qemu-nbd, nbd-client) can read a backup version without a
// full restore.
//
// ServeVersions serves the versions of a blockdiff repository: the export
// name is the version ID, and blocks are read on demand and verified against
// their IDs (Versions is the same as an Exports, for a Server of your own).
// A Server serves any other read-only device through the Exports interface.
// cairn-block's nbd command is ServeVersions on a TCP listener:
//
//	qemu-img convert -O raw nbd://127.0.0.1:10809/VERSION out.img
//
// The server supports the options EXPORT_NAME, LIST, INFO, GO, ABORT and
// STRUCTURED_REPLY, and refuses STARTTLS. In transmission it serves READ,
// FLUSH (a no-op) and DISC, and answers writes and trims with EPERM, as the
// exports are read-only. Reads are answered with structured replies when the
// client asked for them: qemu (7.2) misreads a simple reply to a read that
// ends at an export size which is not a multiple of 512.
//
// The protocol is specified in the NBD project's doc/proto.md.
package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
)

// Export is one device a Server offers. The server closes it when the
// connection that opened it no longer needs it.
type Export interface {
	io.ReaderAt
	io.Closer
	Size() int64
}

// Exports finds the devices a Server offers.
type Exports interface {
	// Open returns the export with the given name, or an error wrapping
	// ErrUnknownExport when there is none.
	Open(ctx context.Context, name string) (Export, error)
	// List returns the names of the exports, for clients that ask.
	List(ctx context.Context) ([]string, error)
}

// ErrUnknownExport is what Exports.Open wraps for a name it does not know.
var ErrUnknownExport = errors.New("nbd: unknown export")

// Protocol constants (doc/proto.md).
const (
	magicNBD        = 0x4e42444d41474943 // "NBDMAGIC"
	magicOpt        = 0x49484156454F5054 // "IHAVEOPT"
	magicRep        = 0x3e889045565a9
	magicRequest    = 0x25609513
	magicSimpleRepl = 0x67446698
	magicStructRepl = 0x668e33ef

	replyFlagDone   = 1 << 0
	replyOffsetData = 1
	replyError      = 1<<15 + 1

	flagFixedNewstyle = 1 << 0
	flagNoZeroes      = 1 << 1

	optExportName = 1
	optAbort      = 2
	optList       = 3
	optInfo       = 6
	optGo         = 7
	optStructured = 8

	repAck         = 1
	repServer      = 2
	repInfo        = 3
	repErrUnsup    = 1<<31 + 1
	repErrInvalid  = 1<<31 + 3
	repErrUnknown  = 1<<31 + 6
	repErrShutdown = 1<<31 + 7

	infoExport    = 0
	infoBlockSize = 3

	tflagHasFlags  = 1 << 0
	tflagReadOnly  = 1 << 1
	tflagSendFlush = 1 << 2
	tflagMultiConn = 1 << 8

	cmdRead  = 0
	cmdWrite = 1
	cmdDisc  = 2
	cmdFlush = 3
	cmdTrim  = 4

	errPerm  = 1
	errIO    = 5
	errInval = 22

	// maxOptionLen and maxRead bound what a client can make the server
	// allocate.
	maxOptionLen = 64 << 10
	maxRead      = 32 << 20
)

// Server serves Exports over NBD. Its zero value is not usable; set Exports.
type Server struct {
	Exports Exports
	Logger  *slog.Logger // nil: slog.Default()
	// Parallel is how many reads of one connection run at once (default 4).
	Parallel int
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// Serve accepts connections on l until ctx is done or l fails, serving each
// in its own goroutine. It returns nil after ctx is cancelled.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("nbd: accept: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.ServeConn(ctx, c); err != nil {
				s.logger().Warn("nbd connection ended with an error", "remote", c.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

// ServeConn negotiates with one client and serves it until it disconnects.
// It closes c.
func (s *Server) ServeConn(ctx context.Context, c net.Conn) error {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	conn := &conn{srv: s, c: c, r: bufio.NewReader(c), w: bufio.NewWriter(c)}
	exp, err := conn.negotiate(ctx)
	if err != nil || exp == nil {
		return err
	}
	defer exp.Close()
	return conn.transmit(exp)
}

type conn struct {
	srv      *Server
	c        net.Conn
	r        *bufio.Reader
	w        *bufio.Writer
	noZeroes bool
	// structured is set when the client negotiated structured replies.
	structured bool
}

func (c *conn) write(vals ...any) error {
	for _, v := range vals {
		var err error
		if b, ok := v.([]byte); ok {
			_, err = c.w.Write(b)
		} else {
			err = binary.Write(c.w, binary.BigEndian, v)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (c *conn) read(vals ...any) error {
	for _, v := range vals {
		if err := binary.Read(c.r, binary.BigEndian, v); err != nil {
			return err
		}
	}
	return nil
}
