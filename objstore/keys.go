package objstore

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxKeyLen is the longest key, in bytes, that ValidateKey accepts. It is the
// S3 limit, so that a repository can move between backends.
const MaxKeyLen = 1024

// ErrInvalidKey is returned (wrapped) when a key is not acceptable to ValidateKey
// or to a backend's own stricter rules.
var ErrInvalidKey = errors.New("invalid key")

// ValidateKey reports whether key is acceptable to every backend, so that a
// repository written to one backend can be copied to another. A key is a
// slash-separated path of one or more non-empty segments: valid UTF-8 of at
// most MaxKeyLen bytes, no NUL or other control characters, no leading or
// trailing slash, no empty segment ("a//b"), and no "." or ".." segment.
// The error wraps ErrInvalidKey and says what is wrong.
func ValidateKey(key string) error {
	bad := func(why string) error {
		return fmt.Errorf("%w %s: %s", ErrInvalidKey, strconv.Quote(key), why)
	}
	switch {
	case key == "":
		return bad("empty")
	case len(key) > MaxKeyLen:
		return bad("longer than " + strconv.Itoa(MaxKeyLen) + " bytes")
	case !utf8.ValidString(key):
		return bad("not valid UTF-8")
	case key[0] == '/':
		return bad("absolute (leading slash)")
	case key[len(key)-1] == '/':
		return bad("trailing slash")
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; c < 0x20 || c == 0x7f {
			if c == 0 {
				return bad("contains NUL")
			}
			return bad("contains control character at byte " + strconv.Itoa(i))
		}
	}
	for seg := range strings.SplitSeq(key, "/") {
		switch seg {
		case "":
			return bad("empty path segment")
		case ".", "..":
			return bad(strconv.Quote(seg) + " path segment")
		}
	}
	return nil
}

// OpError records a failed operation on a store: which backend, which
// operation, which key (the prefix, for List), and why. Backends in this module
// return it for every failure, so errors.As finds the details and errors.Is
// still sees ErrNotExist, ErrExist, ErrNotSupported, ErrInvalidKey or a
// context error through Unwrap.
type OpError struct {
	Backend string // "fs", "mem", "s3", ...
	Op      string // "put", "create", "get", "stat", "delete", "list", ...
	Key     string // the object key, or the prefix for list
	Err     error  // the cause
}

// Error formats the error as `objstore BACKEND: OP "KEY": CAUSE`.
func (e *OpError) Error() string {
	return "objstore " + e.Backend + ": " + e.Op + " " + strconv.Quote(e.Key) + ": " + e.Err.Error()
}

// Unwrap returns the cause.
func (e *OpError) Unwrap() error { return e.Err }

// errSizeMismatch reports that a reader did not hold the announced size.
func errSizeMismatch(want, got int64, more bool) error {
	if more {
		return fmt.Errorf("reader holds more than the announced size %d", want)
	}
	return fmt.Errorf("reader ended after %d of the announced %d bytes: %w", got, want, io.ErrUnexpectedEOF)
}

// readAllSized reads r to its end, checking that it holds exactly size bytes
// when size >= 0. Under Guard, r fails once the Put's context is done.
func readAllSized(r io.Reader, size int64) ([]byte, error) {
	if size < 0 {
		b, err := io.ReadAll(r)
		if err != nil {
			return nil, fmt.Errorf("reading the object: %w", err)
		}
		return b, nil
	}
	b := make([]byte, size)
	n, err := io.ReadFull(r, b)
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		return nil, errSizeMismatch(size, int64(n), false)
	}
	if err != nil {
		return nil, fmt.Errorf("reading the object: %w", err)
	}
	if err := ExpectEOF(r, size); err != nil {
		return nil, err
	}
	return b, nil
}
