package nbd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// negotiate runs the fixed newstyle handshake and the option haggling. It
// returns the export to transmit, or nil when the client ended the session.
func (c *conn) negotiate(ctx context.Context) (Export, error) {
	if err := c.write(uint64(magicNBD), uint64(magicOpt), uint16(flagFixedNewstyle|flagNoZeroes)); err != nil {
		return nil, err
	}
	if err := c.w.Flush(); err != nil {
		return nil, err
	}
	var clientFlags uint32
	if err := c.read(&clientFlags); err != nil {
		return nil, fmt.Errorf("nbd: reading client flags: %w", err)
	}
	if clientFlags&flagFixedNewstyle == 0 {
		return nil, errors.New("nbd: client does not speak fixed newstyle negotiation")
	}
	c.noZeroes = clientFlags&flagNoZeroes != 0
	for {
		exp, done, err := c.option(ctx)
		if err != nil || done {
			return exp, err
		}
		if err := c.w.Flush(); err != nil {
			return nil, err
		}
	}
}

// option reads and answers one option. done is true when negotiation is over:
// with an export to transmit, or with none when the client aborted.
func (c *conn) option(ctx context.Context) (exp Export, done bool, err error) {
	var magic uint64
	var opt, length uint32
	if err := c.read(&magic, &opt, &length); err != nil {
		return nil, true, fmt.Errorf("nbd: reading option: %w", err)
	}
	if magic != magicOpt {
		return nil, true, fmt.Errorf("nbd: bad option magic %#x", magic)
	}
	if length > maxOptionLen {
		return nil, true, fmt.Errorf("nbd: option %d is %d bytes long, more than %d", opt, length, maxOptionLen)
	}
	data := make([]byte, length)
	if _, err := io.ReadFull(c.r, data); err != nil {
		return nil, true, fmt.Errorf("nbd: reading option %d: %w", opt, err)
	}
	switch opt {
	case optExportName:
		return c.exportName(ctx, string(data))
	case optAbort:
		return nil, true, c.reply(opt, repAck, nil)
	case optList:
		return nil, false, c.list(ctx, opt, data)
	case optInfo, optGo:
		return c.infoGo(ctx, opt, data)
	case optStructured:
		if len(data) != 0 {
			return nil, false, c.reply(opt, repErrInvalid, []byte("STRUCTURED_REPLY takes no data"))
		}
		c.structured = true
		return nil, false, c.reply(opt, repAck, nil)
	default:
		return nil, false, c.reply(opt, repErrUnsup, nil)
	}
}

func (c *conn) reply(opt, typ uint32, data []byte) error {
	return c.write(uint64(magicRep), opt, typ, uint32(len(data)), data)
}

// exportName answers the old way to pick an export: no reply on failure
// but a closed connection, as the protocol demands.
func (c *conn) exportName(ctx context.Context, name string) (Export, bool, error) {
	exp, err := c.srv.Exports.Open(ctx, name)
	if err != nil {
		return nil, true, fmt.Errorf("nbd: export %q: %w", name, err)
	}
	err = c.write(uint64(exp.Size()), uint16(transmissionFlags))
	if err == nil && !c.noZeroes {
		err = c.write(make([]byte, 124))
	}
	if err == nil {
		err = c.w.Flush()
	}
	if err != nil {
		exp.Close()
		return nil, true, err
	}
	return exp, true, nil
}

const transmissionFlags = tflagHasFlags | tflagReadOnly | tflagSendFlush | tflagMultiConn

func (c *conn) list(ctx context.Context, opt uint32, data []byte) error {
	if len(data) != 0 {
		return c.reply(opt, repErrInvalid, []byte("LIST takes no data"))
	}
	names, err := c.srv.Exports.List(ctx)
	if err != nil {
		c.srv.logger().Warn("nbd: listing exports failed", "err", err)
		return c.reply(opt, repErrShutdown, []byte("listing exports failed"))
	}
	for _, n := range names {
		d := binary.BigEndian.AppendUint32(nil, uint32(len(n)))
		if err := c.reply(opt, repServer, append(d, n...)); err != nil {
			return err
		}
	}
	return c.reply(opt, repAck, nil)
}

// infoGo answers INFO and GO: the export's size and flags, and its block
// sizes; GO then starts transmission.
func (c *conn) infoGo(ctx context.Context, opt uint32, data []byte) (Export, bool, error) {
	name, ok := parseInfoRequest(data)
	if !ok {
		return nil, false, c.reply(opt, repErrInvalid, []byte("malformed INFO/GO request"))
	}
	exp, err := c.srv.Exports.Open(ctx, name)
	if err != nil {
		msg := fmt.Sprintf("export %q: %v", name, err)
		typ := uint32(repErrUnknown)
		if !errors.Is(err, ErrUnknownExport) {
			typ = repErrShutdown
		}
		return nil, false, c.reply(opt, typ, []byte(msg))
	}
	if err := c.describe(opt, exp); err != nil || opt == optInfo {
		exp.Close() // INFO only describes the export; GO keeps it open
		return nil, false, err
	}
	if err := c.w.Flush(); err != nil {
		exp.Close()
		return nil, false, err
	}
	return exp, true, nil
}

// describe sends the INFO replies of exp: its size and flags, its block
// sizes, and the final acknowledgement.
func (c *conn) describe(opt uint32, exp Export) error {
	var info []byte
	info = binary.BigEndian.AppendUint16(info, infoExport)
	info = binary.BigEndian.AppendUint64(info, uint64(exp.Size()))
	info = binary.BigEndian.AppendUint16(info, transmissionFlags)
	if err := c.reply(opt, repInfo, info); err != nil {
		return err
	}
	var bs []byte
	bs = binary.BigEndian.AppendUint16(bs, infoBlockSize)
	bs = binary.BigEndian.AppendUint32(bs, 1)       // minimum
	bs = binary.BigEndian.AppendUint32(bs, 4096)    // preferred
	bs = binary.BigEndian.AppendUint32(bs, maxRead) // maximum
	if err := c.reply(opt, repInfo, bs); err != nil {
		return err
	}
	return c.reply(opt, repAck, nil)
}

// parseInfoRequest reads the export name of an INFO or GO option:
// name length, name, number of info requests, requests.
func parseInfoRequest(d []byte) (string, bool) {
	if len(d) < 4 {
		return "", false
	}
	n := binary.BigEndian.Uint32(d)
	if uint64(n)+6 > uint64(len(d)) {
		return "", false
	}
	name := string(d[4 : 4+n])
	rest := d[4+n:]
	k := binary.BigEndian.Uint16(rest)
	return name, len(rest) == 2+2*int(k)
}
