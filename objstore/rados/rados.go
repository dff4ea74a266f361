//go:build ceph

package rados

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	librados "github.com/ceph/go-ceph/rados"

	"github.com/cairn-backup/cairn/internal/ceph"
	"github.com/cairn-backup/cairn/objstore"
)

// Defaults and limits of the URL's query parameters.
const (
	DefaultNamespace = "cairn"   // namespace when unset
	DefaultPartSize  = 32 << 20  // part_size when unset
	MinPartSize      = 64 << 10  // smallest part_size accepted
	MaxPartSize      = 64 << 20  // largest part_size accepted (under osd_max_write_size's 90 MB default)
	chunkSize        = 4 << 20   // bytes per write or read operation on a part
	listWorkers      = 16        // concurrent header reads of List
	maxPrefixLen     = 512       // longest store prefix, so that names stay under osd_max_object_name_len
	defaultObjectMax = 128 << 20 // osd_max_object_size's default, when the cluster does not say
)

// The object format: every object written by this backend starts with a
// header, so that its logical size, its write time and its kind are read
// together with (or without) its bytes in one operation.
const (
	magic     = "CRD1"
	kindBytes = 1 // the object's bytes follow the header
	kindParts = 2 // a manifest follows: the bytes are in part objects
	hdrLen    = 24
	headLen   = hdrLen + 8 + 16 // header + part size + token
)

func init() { objstore.Register("rados", open) }

// header is the decoded start of a stored object.
type header struct {
	kind     byte
	size     int64
	mtime    int64 // Unix nanoseconds, the writer's clock
	partSize int64 // kindParts only
	token    [16]byte
}

func (h header) encode(b []byte) []byte {
	b = append(b, magic...)
	b = append(b, h.kind, 0, 0, 0)
	b = binary.BigEndian.AppendUint64(b, uint64(h.size))
	b = binary.BigEndian.AppendUint64(b, uint64(h.mtime))
	if h.kind == kindParts {
		b = binary.BigEndian.AppendUint64(b, uint64(h.partSize))
		b = append(b, h.token[:]...)
	}
	return b
}

// errForeign marks an object under the prefix that this backend did not write.
var errForeign = errors.New("not an object of the cairn rados backend (bad header)")

func decodeHeader(b []byte) (header, error) {
	if len(b) < hdrLen || string(b[:4]) != magic {
		return header{}, errForeign
	}
	h := header{kind: b[4], size: int64(binary.BigEndian.Uint64(b[8:])), mtime: int64(binary.BigEndian.Uint64(b[16:]))}
	switch h.kind {
	case kindBytes:
	case kindParts:
		if len(b) < headLen {
			return header{}, errForeign
		}
		h.partSize = int64(binary.BigEndian.Uint64(b[24:]))
		copy(h.token[:], b[32:48])
		if h.partSize <= 0 {
			return header{}, errForeign
		}
	default:
		return header{}, errForeign
	}
	if h.size < 0 {
		return header{}, errForeign
	}
	return h, nil
}

// store is the rados backend behind objstore.Guard, which checks the store,
// the context and the key before each call.
type store struct {
	conn     *librados.Conn
	parts    *librados.IOContext // the parts namespace
	all      *librados.IOContext // every namespace, for List
	iosMu    sync.Mutex
	ios      map[string]*librados.IOContext // by namespace: NS/first key segment
	pool, ns string
	prefix   string // "" or ends with "/"
	partSize int64
	once     sync.Once
}

// ParseURL checks a rados:// URL and returns its pool, prefix and query
// options without connecting. It accepts rados://POOL[/PREFIX][?options].
func ParseURL(raw string) (pool, prefix string, q url.Values, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", nil, fmt.Errorf("objstore rados: bad URL: %w", err)
	}
	return parseURL(u)
}

func parseURL(u *url.URL) (pool, prefix string, q url.Values, err error) {
	bad := func(why string) error {
		return fmt.Errorf("objstore rados: URL %q: %s (want rados://POOL/PREFIX?namespace=...&part_size=...)", u.Redacted(), why)
	}
	if u.Scheme != "rados" {
		return "", "", nil, bad("scheme is not rados")
	}
	if u.User != nil {
		return "", "", nil, bad("carries credentials; the key comes from the keyring that ceph.conf, CEPH_ARGS or the keyring parameter names")
	}
	if u.Opaque != "" || u.Host == "" || u.Port() != "" {
		return "", "", nil, bad("no pool")
	}
	pool = u.Host
	if strings.ContainsFunc(pool, func(c rune) bool { return c < 0x20 || c == 0x7f }) {
		return "", "", nil, bad("control character in the pool name")
	}
	prefix = strings.Trim(u.Path, "/")
	if prefix != "" {
		if err := objstore.ValidateKey(prefix); err != nil {
			return "", "", nil, bad("bad prefix: " + err.Error())
		}
		if len(prefix) > maxPrefixLen {
			return "", "", nil, bad("prefix longer than " + strconv.Itoa(maxPrefixLen) + " bytes")
		}
		prefix += "/"
	}
	q, err = url.ParseQuery(u.RawQuery)
	if err != nil {
		return "", "", nil, bad("bad query: " + err.Error())
	}
	for k := range q {
		switch k {
		case "namespace", "part_size", "conf", "id", "keyring", "timeout":
		default:
			return "", "", nil, bad("unknown parameter " + strconv.Quote(k))
		}
	}
	if ns := q.Get("namespace"); strings.ContainsFunc(ns, func(c rune) bool { return c < 0x20 || c == 0x7f }) {
		return "", "", nil, bad("control character in the namespace")
	}
	if v := q.Get("part_size"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < MinPartSize || n > MaxPartSize {
			return "", "", nil, bad(fmt.Sprintf("part_size %q: want bytes in %d..%d", v, MinPartSize, MaxPartSize))
		}
	}
	if v := q.Get("timeout"); v != "" {
		if d, err := time.ParseDuration(v); err != nil || d <= 0 {
			return "", "", nil, bad(fmt.Sprintf("timeout %q: want a positive Go duration such as 30s", v))
		}
	}
	return pool, prefix, q, nil
}

func open(ctx context.Context, u *url.URL) (objstore.Store, error) {
	pool, prefix, q, err := parseURL(u)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	timeout, _ := time.ParseDuration(q.Get("timeout"))
	conn, err := ceph.Connect(ceph.ConnConfig{Conf: q.Get("conf"), User: q.Get("id"), Keyring: q.Get("keyring"), Timeout: timeout})
	if err != nil {
		return nil, fmt.Errorf("objstore rados: %w", err)
	}
	s := &store{conn: conn, pool: pool, prefix: prefix, ns: DefaultNamespace, partSize: DefaultPartSize}
	if q.Has("namespace") {
		s.ns = q.Get("namespace")
	}
	if v := q.Get("part_size"); v != "" {
		s.partSize, _ = strconv.ParseInt(v, 10, 64)
	}
	if s.parts, err = ceph.OpenPool(conn, pool); err != nil {
		conn.Shutdown()
		return nil, fmt.Errorf("objstore rados: %w", err)
	}
	s.parts.SetNamespace(s.ns + ".parts")
	if s.all, err = ceph.OpenPool(conn, pool); err != nil {
		s.parts.Destroy()
		conn.Shutdown()
		return nil, fmt.Errorf("objstore rados: %w", err)
	}
	s.all.SetNamespace(librados.AllNamespaces)
	s.ios = map[string]*librados.IOContext{}
	if limit := osdLimit(conn); s.partSize > limit {
		s.partSize = limit
	}
	return objstore.Guard("rados", s, nil), nil
}

// osdLimit asks the monitors for the OSDs' object and write size limits and
// returns the largest part that respects both; defaults when it cannot ask.
func osdLimit(conn *librados.Conn) int64 {
	get := func(key string, def int64) int64 {
		cmd, _ := json.Marshal(map[string]string{"prefix": "config get", "who": "osd", "key": key, "format": "json"})
		out, _, err := conn.MonCommand(cmd)
		if err != nil {
			return def
		}
		var v any
		if json.Unmarshal(out, &v) != nil {
			return def
		}
		var n int64
		switch x := v.(type) {
		case float64:
			n = int64(x)
		case string:
			n, err = strconv.ParseInt(strings.TrimSpace(x), 10, 64)
			if err != nil {
				return def
			}
		default:
			return def
		}
		if n <= 0 {
			return def
		}
		return n
	}
	objMax := get("osd_max_object_size", defaultObjectMax)
	writeMax := get("osd_max_write_size", 90) << 20 // in MB
	return max(MinPartSize, min(objMax, writeMax-headLen-(1<<20)))
}

func (s *store) err(op, key string, err error) error {
	return &objstore.OpError{Backend: "rados", Op: op, Key: key, Err: err}
}

func (s *store) oid(key string) string { return s.prefix + key }

// firstSegment returns key up to its first slash.
func firstSegment(key string) string {
	if i := strings.IndexByte(key, '/'); i >= 0 {
		return key[:i]
	}
	return key
}

// io returns the I/O context of the namespace that holds key (or, for a
// prefix with a slash, every key under it): NS/FIRST-SEGMENT.
func (s *store) ioc(key string) (*librados.IOContext, error) {
	ns := s.ns + "/" + firstSegment(key)
	s.iosMu.Lock()
	defer s.iosMu.Unlock()
	if ioc, ok := s.ios[ns]; ok {
		return ioc, nil
	}
	ioc, err := ceph.OpenPool(s.conn, s.pool)
	if err != nil {
		return nil, err
	}
	ioc.SetNamespace(ns)
	s.ios[ns] = ioc
	return ioc, nil
}

func partName(oid string, token [16]byte, i int64) string {
	return oid + "\x1f" + hex.EncodeToString(token[:]) + "." + strconv.FormatInt(i, 10)
}

// radosErr maps librados errors to objstore's.
func radosErr(err error) error {
	if errors.Is(err, librados.ErrNotFound) {
		return fmt.Errorf("%w (%v)", objstore.ErrNotExist, err)
	}
	if errors.Is(err, librados.ErrObjectExists) {
		return fmt.Errorf("%w (%v)", objstore.ErrExist, err)
	}
	return err
}

// readHead reads an object's header (and manifest).
func (s *store) readHead(ioc *librados.IOContext, oid string) (header, error) {
	buf := make([]byte, headLen)
	n, err := ioc.Read(oid, buf, 0)
	if err != nil {
		return header{}, radosErr(err)
	}
	return decodeHeader(buf[:n])
}

func (s *store) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	return s.put(ctx, "put", key, r, size, false)
}

func (s *store) Create(ctx context.Context, key string, r io.Reader, size int64) error {
	return s.put(ctx, "create", key, r, size, true)
}

// put stores r; under objstore.Guard, r fails once ctx is done.
func (s *store) put(ctx context.Context, op, key string, r io.Reader, size int64, excl bool) error {
	ioc, err := s.ioc(key)
	if err != nil {
		return s.err(op, key, err)
	}
	oid := s.oid(key)
	// The first part's worth decides: small objects are one write-full.
	first := size
	if size < 0 || size > s.partSize {
		first = s.partSize + 1
	}
	buf := make([]byte, hdrLen, hdrLen+first)
	buf = buf[:hdrLen+first]
	n, err := io.ReadFull(r, buf[hdrLen:])
	switch {
	case err == io.ErrUnexpectedEOF || err == io.EOF:
		if size >= 0 {
			return s.err(op, key, fmt.Errorf("reader ended after %d of the announced %d bytes: %w", n, size, io.ErrUnexpectedEOF))
		}
	case err != nil:
		return s.err(op, key, fmt.Errorf("reading the object: %w", err))
	}
	buf = buf[:hdrLen+n]
	if int64(n) <= s.partSize {
		if size >= 0 {
			if err := objstore.ExpectEOF(r, size); err != nil {
				return s.err(op, key, err)
			}
		}
		h := header{kind: kindBytes, size: int64(n), mtime: time.Now().UnixNano()}
		copy(buf, h.encode(nil))
		return s.writeHead(ctx, ioc, op, key, oid, buf, excl)
	}
	return s.putParts(ctx, ioc, op, key, oid, buf[hdrLen:], r, size, excl)
}

// writeHead writes the head object in one operation (exclusively for
// Create) and then removes the parts of the object it replaced.
func (s *store) writeHead(ctx context.Context, ioc *librados.IOContext, op, key, oid string, body []byte, excl bool) error {
	var old header
	if !excl { // the parts of the object being replaced, to delete afterwards
		var err error
		old, err = s.readHead(ioc, oid)
		if err != nil && !errors.Is(err, objstore.ErrNotExist) && !errors.Is(err, errForeign) {
			return s.err(op, key, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return s.err(op, key, err)
	}
	w := librados.CreateWriteOp()
	defer w.Release()
	if excl {
		w.Create(librados.CreateExclusive)
	}
	w.WriteFull(body)
	if err := w.Operate(ioc, oid, librados.OperationNoFlag); err != nil {
		return s.err(op, key, radosErr(err))
	}
	if old.kind == kindParts {
		s.deleteParts(oid, old)
	}
	return nil
}

// putParts stores a large object: its bytes in part objects of the parts
// namespace, written chunk by chunk, then the head that names them in one
// write. Readers see the old object until the head is written.
func (s *store) putParts(ctx context.Context, ioc *librados.IOContext, op, key, oid string, first []byte, r io.Reader, size int64, excl bool) error {
	h := header{kind: kindParts, partSize: s.partSize}
	if _, err := rand.Read(h.token[:]); err != nil {
		return s.err(op, key, err)
	}
	var total int64
	fail := func(err error) error {
		h.size = total
		s.deleteParts(oid, h)
		return s.err(op, key, err)
	}
	src := io.MultiReader(bytes.NewReader(first), r)
	buf := make([]byte, chunkSize)
	for part := int64(0); ; part++ {
		var inPart int64
		name := partName(oid, h.token, part)
		for inPart < s.partSize {
			n, err := io.ReadFull(src, buf[:min(int64(len(buf)), s.partSize-inPart)])
			if n > 0 {
				if size >= 0 && total+int64(n) > size {
					return fail(fmt.Errorf("reader holds more than the announced size %d", size))
				}
				if werr := s.parts.Write(name, buf[:n], uint64(inPart)); werr != nil {
					return fail(fmt.Errorf("writing part %d: %w", part, werr))
				}
				inPart += int64(n)
				total += int64(n)
			}
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				if size >= 0 && total != size {
					return fail(fmt.Errorf("reader ended after %d of the announced %d bytes: %w", total, size, io.ErrUnexpectedEOF))
				}
				h.size, h.mtime = total, time.Now().UnixNano()
				if err := s.writeHead(ctx, ioc, op, key, oid, h.encode(nil), excl); err != nil {
					s.deleteParts(oid, h)
					return err
				}
				return nil
			}
			if err != nil {
				return fail(fmt.Errorf("reading the object: %w", err))
			}
		}
	}
}

// deleteParts removes the part objects of h, best effort: a part left
// behind is garbage that no head names (see the package documentation).
func (s *store) deleteParts(oid string, h header) {
	n := (h.size + h.partSize - 1) / h.partSize
	for i := range max(n, 1) {
		_ = s.parts.Delete(partName(oid, h.token, i))
	}
}

func (s *store) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	ioc, err := s.ioc(key)
	if err != nil {
		return nil, s.err("get", key, err)
	}
	oid := s.oid(key)
	for attempt := 0; ; attempt++ {
		var h header
		if attempt < 3 {
			var err error
			if h, err = s.readHead(ioc, oid); err != nil {
				return nil, s.err("get", key, err)
			}
		} else {
			// Under constant overwrites: one read sized for the largest
			// object that is not striped, so the header and the bytes
			// come from the same write.
			h = header{kind: kindBytes, size: offset + s.partSize}
		}
		n := max(0, h.size-offset)
		if length >= 0 {
			n = min(n, length)
		}
		if h.kind == kindParts {
			return &partReader{ctx: ctx, s: s, key: key, oid: oid, h: h, off: offset, end: offset + n}, nil
		}
		if n == 0 {
			return io.NopCloser(bytes.NewReader(nil)), nil
		}
		// The header again with the bytes, in one atomic read: if the
		// object was replaced since the first read, start over.
		rd := librados.CreateReadOp()
		hb := make([]byte, headLen)
		body := make([]byte, n)
		s1 := rd.Read(0, hb)
		s2 := rd.Read(uint64(hdrLen+offset), body)
		err := rd.Operate(ioc, oid, librados.OperationNoFlag)
		r1, r2 := s1.BytesRead, s2.BytesRead
		rd.Release()
		if err != nil {
			return nil, s.err("get", key, radosErr(err))
		}
		h2, err := decodeHeader(hb[:r1])
		if err != nil {
			return nil, s.err("get", key, err)
		}
		if attempt >= 3 {
			if h2.kind == kindParts {
				return &partReader{ctx: ctx, s: s, key: key, oid: oid, h: h2, off: offset,
					end: offset + max(0, min(h2.size-offset, lengthOr(length, h2.size)))}, nil
			}
			want := max(0, h2.size-offset)
			if length >= 0 {
				want = min(want, length)
			}
			if r2 == want {
				return io.NopCloser(bytes.NewReader(body[:want])), nil
			}
		}
		if h2 == h && r2 == n {
			return io.NopCloser(bytes.NewReader(body)), nil
		}
		if attempt >= 5 {
			return nil, s.err("get", key, errors.New("the object keeps changing while being read"))
		}
	}
}

// lengthOr returns length, or def when length is negative (to the end).
func lengthOr(length, def int64) int64 {
	if length < 0 {
		return def
	}
	return length
}

// partReader streams a range of a large object, part by part.
type partReader struct {
	ctx      context.Context
	s        *store
	key, oid string
	h        header
	off, end int64
	buf      []byte
	err      error
}

func (p *partReader) Read(b []byte) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	if len(p.buf) == 0 {
		if p.off >= p.end {
			p.err = io.EOF
			return 0, io.EOF
		}
		if err := p.ctx.Err(); err != nil {
			p.err = err
			return 0, err
		}
		part, in := p.off/p.h.partSize, p.off%p.h.partSize
		n := min(p.end-p.off, p.h.partSize-in, chunkSize)
		if cap(p.buf) < int(n) {
			p.buf = make([]byte, chunkSize)
		}
		p.buf = p.buf[:n]
		got, err := p.s.parts.Read(partName(p.oid, p.h.token, part), p.buf, uint64(in))
		if err == nil && int64(got) != n {
			err = fmt.Errorf("part %d holds less than its head says", part)
		}
		if errors.Is(err, librados.ErrNotFound) {
			err = errors.New("the object was replaced or deleted while being read")
		}
		if err != nil {
			p.err = p.s.err("get", p.key, err)
			return 0, p.err
		}
		p.off += n
	}
	n := copy(b, p.buf)
	p.buf = p.buf[n:]
	return n, nil
}

func (p *partReader) Close() error {
	if p.err == nil {
		p.err = errors.New("read after Close")
	}
	p.buf = nil
	return nil
}

func (s *store) Stat(_ context.Context, key string) (objstore.ObjectInfo, error) {
	ioc, err := s.ioc(key)
	if err != nil {
		return objstore.ObjectInfo{}, s.err("stat", key, err)
	}
	h, err := s.readHead(ioc, s.oid(key))
	if err != nil {
		return objstore.ObjectInfo{}, s.err("stat", key, err)
	}
	return objstore.ObjectInfo{Key: key, Size: h.size, ModTime: time.Unix(0, h.mtime)}, nil
}

func (s *store) Delete(_ context.Context, key string) error {
	ioc, err := s.ioc(key)
	if err != nil {
		return s.err("delete", key, err)
	}
	oid := s.oid(key)
	h, err := s.readHead(ioc, oid)
	if errors.Is(err, objstore.ErrNotExist) {
		return nil
	}
	if err != nil && !errors.Is(err, errForeign) {
		return s.err("delete", key, err)
	}
	if err := ioc.Delete(oid); err != nil && !errors.Is(err, librados.ErrNotFound) {
		return s.err("delete", key, err)
	}
	if h.kind == kindParts {
		s.deleteParts(oid, h)
	}
	return nil
}

func (s *store) List(ctx context.Context, prefix string) iter.Seq2[objstore.ObjectInfo, error] {
	return func(yield func(objstore.ObjectInfo, error) bool) {
		fail := func(err error) { yield(objstore.ObjectInfo{}, s.err("list", prefix, err)) }
		keys, err := s.names(ctx, prefix)
		if err != nil {
			fail(err)
			return
		}
		slices.Sort(keys)
		// Headers are read listWorkers at a time, in batches, in key order.
		const batch = 4 * listWorkers
		for start := 0; start < len(keys); start += batch {
			if err := ctx.Err(); err != nil {
				fail(err)
				return
			}
			part := keys[start:min(len(keys), start+batch)]
			infos := make([]objstore.ObjectInfo, len(part))
			errs := make([]error, len(part))
			sem := make(chan struct{}, listWorkers)
			var wg sync.WaitGroup
			for i, k := range part {
				sem <- struct{}{}
				wg.Go(func() {
					defer func() { <-sem }()
					ioc, err := s.ioc(k)
					var h header
					if err == nil {
						h, err = s.readHead(ioc, s.oid(k))
					}
					if err == nil {
						infos[i] = objstore.ObjectInfo{Key: k, Size: h.size, ModTime: time.Unix(0, h.mtime)}
					}
					errs[i] = err
				})
			}
			wg.Wait()
			for i := range part {
				if errors.Is(errs[i], objstore.ErrNotExist) || errors.Is(errs[i], errForeign) {
					continue // deleted since the listing, or not ours
				}
				if errs[i] != nil {
					fail(errs[i])
					return
				}
				if !yield(infos[i], nil) {
					return
				}
			}
		}
	}
}

// names lists the keys (without the store prefix) of every object whose key
// starts with prefix. A prefix with a slash names one namespace, which alone
// is walked; a prefix without one may match keys of several first segments,
// so every namespace of the pool is walked.
func (s *store) names(ctx context.Context, prefix string) ([]string, error) {
	it, err := s.all.Iter()
	if strings.Contains(prefix, "/") {
		var ioc *librados.IOContext
		if ioc, err = s.ioc(prefix); err == nil {
			it, err = ioc.Iter()
		}
	}
	if err != nil {
		return nil, err
	}
	defer it.Close()
	full, nsPrefix := s.prefix+prefix, s.ns+"/"
	var keys []string
	for n := 0; it.Next(); n++ {
		if n%1024 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		name := it.Value()
		if !strings.HasPrefix(name, full) {
			continue
		}
		k := name[len(s.prefix):]
		ns, ok := strings.CutPrefix(it.Namespace(), nsPrefix)
		if ok && ns == firstSegment(k) && objstore.ValidateKey(k) == nil {
			keys = append(keys, k)
		}
	}
	if err := it.Err(); err != nil {
		return nil, err
	}
	return keys, nil
}

func (s *store) Close() error {
	s.once.Do(func() {
		for _, ioc := range s.ios {
			ioc.Destroy()
		}
		s.all.Destroy()
		s.parts.Destroy()
		s.conn.Shutdown()
	})
	return nil
}
