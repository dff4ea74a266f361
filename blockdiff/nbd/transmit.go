package nbd

import (
	"errors"
	"fmt"
	"io"
	"sync"
)

// request is one transmission-phase request header.
type request struct {
	flags  uint16
	typ    uint16
	handle uint64
	offset uint64
	length uint32
}

// replier writes whole replies, one at a time, from concurrent reads.
type replier struct {
	mu sync.Mutex
	c  *conn
}

// simple sends a simple reply: header, then data when there is no error.
func (r *replier) simple(handle uint64, errno uint32, data []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.c.write(uint32(magicSimpleRepl), errno, handle, data); err != nil {
		return err
	}
	return r.c.w.Flush()
}

// read answers a read: structured when negotiated (one data chunk, or one
// error chunk with a message), simple otherwise.
func (r *replier) read(rq request, errno uint32, msg string, data []byte) error {
	if !r.c.structured {
		return r.simple(rq.handle, errno, data)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var err error
	if errno == 0 {
		err = r.c.write(uint32(magicStructRepl), uint16(replyFlagDone), uint16(replyOffsetData), rq.handle,
			uint32(8+len(data)), rq.offset, data)
	} else {
		err = r.c.write(uint32(magicStructRepl), uint16(replyFlagDone), uint16(replyError), rq.handle,
			uint32(6+len(msg)), errno, uint16(len(msg)), []byte(msg))
	}
	if err != nil {
		return err
	}
	return r.c.w.Flush()
}

// transmit serves requests until the client disconnects. Reads run in up to
// Parallel goroutines, so a client that pipelines gets its answers sooner.
func (c *conn) transmit(exp Export) error {
	par := c.srv.Parallel
	if par <= 0 {
		par = 4
	}
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	defer wg.Wait()
	rep := &replier{c: c}
	for {
		var magic uint32
		var rq request
		if err := c.read(&magic, &rq.flags, &rq.typ, &rq.handle, &rq.offset, &rq.length); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("nbd: reading request: %w", err)
		}
		if magic != magicRequest {
			return fmt.Errorf("nbd: bad request magic %#x", magic)
		}
		var err error
		switch rq.typ {
		case cmdRead:
			if !inRange(rq, exp.Size()) {
				err = rep.read(rq, errInval, fmt.Sprintf("read of %d bytes at %d is outside the export (%d bytes)", rq.length, rq.offset, exp.Size()), nil)
				break
			}
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				c.serveRead(exp, rq, rep)
			}()
		case cmdDisc:
			return nil
		case cmdFlush:
			err = rep.simple(rq.handle, 0, nil)
		case cmdWrite:
			// The payload follows the header; skip it before refusing.
			if _, err := io.CopyN(io.Discard, c.r, int64(rq.length)); err != nil {
				return fmt.Errorf("nbd: skipping write payload: %w", err)
			}
			err = rep.simple(rq.handle, errPerm, nil)
		case cmdTrim:
			err = rep.simple(rq.handle, errPerm, nil)
		default:
			err = rep.simple(rq.handle, errInval, nil)
		}
		if err != nil {
			return fmt.Errorf("nbd: replying: %w", err)
		}
	}
}

func inRange(rq request, size int64) bool {
	return rq.length <= maxRead && rq.offset <= uint64(size) && uint64(rq.length) <= uint64(size)-rq.offset
}

func (c *conn) serveRead(exp Export, rq request, rep *replier) {
	buf := make([]byte, rq.length)
	n, err := exp.ReadAt(buf, int64(rq.offset))
	if n == len(buf) {
		err = nil // io.ReaderAt may return EOF with a full read at the end
	}
	if err != nil {
		c.srv.logger().Error("nbd: read failed", "offset", rq.offset, "length", rq.length, "err", err)
		err = rep.read(rq, errIO, "read failed: "+err.Error(), nil)
	} else {
		err = rep.read(rq, 0, "", buf)
	}
	if err != nil {
		c.c.Close() // the connection is broken: end the request loop too
	}
}
