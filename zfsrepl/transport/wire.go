package transport

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
)

// EncodingChunked is the default wire encoding of non-raw streams: the stream
// is cut into chunks of up to ChunkSize bytes, each sent either as an
// independent zstd frame or, when zstd does not shrink it, as it is:
//
//	chunk = kind (1 byte: 0 raw, 1 zstd) | length (4 bytes, big endian) | payload
//
// Compressing data that does not compress (already compressed or encrypted
// files) costs CPU for nothing, so after a chunk that zstd could not shrink
// the encoder sends the following ones raw and probes again only every
// probeEvery chunks.
const EncodingChunked = "zstd-chunked"

// ChunkSize is the largest chunk of the chunked encoding.
const ChunkSize = 1 << 20

const (
	chunkRaw   = 0
	chunkZstd  = 1
	probeEvery = 16
	// A chunk counts as compressible when zstd saves at least 1/32 of it.
	minSaving = 32
)

// chunkWriter encodes a stream in the chunked encoding.
type chunkWriter struct {
	w       io.Writer
	enc     *zstd.Encoder
	buf     []byte
	zbuf    []byte
	out     []byte
	skip    int // chunks to send raw before probing again
	Raw     int64
	Zstd    int64
	encoded int64
}

func newChunkWriter(w io.Writer) (*chunkWriter, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(ChunkSize))
	if err != nil {
		return nil, err
	}
	return &chunkWriter{w: w, enc: enc, buf: make([]byte, 0, ChunkSize), out: make([]byte, 0, ChunkSize+5)}, nil
}

// ReadFrom reads the whole stream and writes it as chunks.
func (c *chunkWriter) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	for {
		n, err := io.ReadFull(r, c.buf[:ChunkSize])
		if n > 0 {
			total += int64(n)
			if werr := c.writeChunk(c.buf[:n]); werr != nil {
				return total, werr
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

func (c *chunkWriter) writeChunk(p []byte) error {
	kind, payload := byte(chunkRaw), p
	if c.skip > 0 {
		c.skip--
	} else {
		c.zbuf = c.enc.EncodeAll(p, c.zbuf[:0])
		if len(c.zbuf) < len(p)-len(p)/minSaving {
			kind, payload = chunkZstd, c.zbuf
		} else {
			c.skip = probeEvery - 1
		}
	}
	// One write per chunk (header and payload), so that the HTTP/2 client
	// sends full DATA frames.
	c.out = append(append(c.out[:0], kind, 0, 0, 0, 0), payload...)
	binary.BigEndian.PutUint32(c.out[1:5], uint32(len(payload)))
	if _, err := c.w.Write(c.out); err != nil {
		return err
	}
	if kind == chunkZstd {
		c.Zstd++
	} else {
		c.Raw++
	}
	c.encoded += int64(len(c.out))
	return nil
}

// chunkReader decodes the chunked encoding.
type chunkReader struct {
	r    *bufio.Reader
	dec  *zstd.Decoder
	in   []byte
	out  []byte
	rest []byte
}

func newChunkReader(r io.Reader) (*chunkReader, error) {
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(4*ChunkSize),
		zstd.WithDecoderMaxWindow(ChunkSize))
	if err != nil {
		return nil, err
	}
	return &chunkReader{r: bufio.NewReaderSize(r, 256<<10), dec: dec}, nil
}

var errBadChunk = errors.New("transport: malformed chunk")

func (c *chunkReader) Read(p []byte) (int, error) {
	for len(c.rest) == 0 {
		var hdr [5]byte
		if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
			if err == io.ErrUnexpectedEOF {
				return 0, fmt.Errorf("%w: truncated header", errBadChunk)
			}
			return 0, err // io.EOF at a chunk boundary: the end
		}
		n := binary.BigEndian.Uint32(hdr[1:])
		if n > ChunkSize+ChunkSize/8 {
			return 0, fmt.Errorf("%w: length %d", errBadChunk, n)
		}
		if cap(c.in) < int(n) {
			c.in = make([]byte, n)
		}
		c.in = c.in[:n]
		if _, err := io.ReadFull(c.r, c.in); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
		switch hdr[0] {
		case chunkRaw:
			c.rest = c.in
		case chunkZstd:
			out, err := c.dec.DecodeAll(c.in, c.out[:0])
			if err != nil {
				return 0, fmt.Errorf("%w: %w", errBadChunk, err)
			}
			if len(out) > ChunkSize {
				return 0, fmt.Errorf("%w: chunk decodes to %d bytes", errBadChunk, len(out))
			}
			c.out = out
			c.rest = out
		default:
			return 0, fmt.Errorf("%w: kind %d", errBadChunk, hdr[0])
		}
	}
	n := copy(p, c.rest)
	c.rest = c.rest[n:]
	return n, nil
}

func (c *chunkReader) Close() { c.dec.Close() }
