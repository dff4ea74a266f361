package objstore

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"iter"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"
)

// The backend is documented in the package documentation, section "Memory backend".

func init() { Register("mem", openMem) }

var memNamed = struct {
	sync.Mutex
	m map[string]*memData
}{m: map[string]*memData{}}

type memData struct {
	mu   sync.RWMutex
	objs map[string]memObj
}

type memObj struct {
	data []byte // never modified once stored
	mod  time.Time
}

// memStore is the memory backend behind Guard, which checks the store, the
// context and the key before each call.
type memStore struct {
	d *memData
}

func openMem(_ context.Context, u *url.URL) (Store, error) {
	if u.User != nil || u.Port() != "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Opaque != "" {
		return nil, fmt.Errorf("objstore mem: URL %q: want mem://NAME with nothing else", u.Redacted())
	}
	name := u.Host
	if name == "" {
		return Guard("mem", &memStore{d: &memData{objs: map[string]memObj{}}}, nil), nil
	}
	memNamed.Lock()
	defer memNamed.Unlock()
	d, ok := memNamed.m[name]
	if !ok {
		d = &memData{objs: map[string]memObj{}}
		memNamed.m[name] = d
	}
	return Guard("mem", &memStore{d: d}, nil), nil
}

func (s *memStore) put(ctx context.Context, op, key string, r io.Reader, size int64, excl bool) error {
	if excl {
		// Fail early without reading r when the key is taken; checked again below.
		s.d.mu.RLock()
		_, ok := s.d.objs[key]
		s.d.mu.RUnlock()
		if ok {
			return &OpError{"mem", op, key, ErrExist}
		}
	}
	b, err := readAllSized(r, size)
	if err != nil {
		return &OpError{"mem", op, key, err}
	}
	if err := ctx.Err(); err != nil {
		return &OpError{"mem", op, key, err}
	}
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	if _, ok := s.d.objs[key]; ok && excl {
		return &OpError{"mem", op, key, ErrExist}
	}
	s.d.objs[key] = memObj{data: b, mod: time.Now()}
	return nil
}

func (s *memStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	return s.put(ctx, "put", key, r, size, false)
}

func (s *memStore) Create(ctx context.Context, key string, r io.Reader, size int64) error {
	return s.put(ctx, "create", key, r, size, true)
}

func (s *memStore) lookup(op, key string) (memObj, error) {
	s.d.mu.RLock()
	o, ok := s.d.objs[key]
	s.d.mu.RUnlock()
	if !ok {
		return memObj{}, &OpError{"mem", op, key, ErrNotExist}
	}
	return o, nil
}

func (s *memStore) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	o, err := s.lookup("get", key)
	if err != nil {
		return nil, err
	}
	b := o.data[min(offset, int64(len(o.data))):]
	if length >= 0 && length < int64(len(b)) {
		b = b[:length]
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (s *memStore) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	o, err := s.lookup("stat", key)
	if err != nil {
		return ObjectInfo{}, err
	}
	return ObjectInfo{Key: key, Size: int64(len(o.data)), ModTime: o.mod}, nil
}

func (s *memStore) Delete(_ context.Context, key string) error {
	s.d.mu.Lock()
	delete(s.d.objs, key)
	s.d.mu.Unlock()
	return nil
}

func (s *memStore) List(ctx context.Context, prefix string) iter.Seq2[ObjectInfo, error] {
	return func(yield func(ObjectInfo, error) bool) {
		s.d.mu.RLock()
		var infos []ObjectInfo
		for k, o := range s.d.objs {
			if strings.HasPrefix(k, prefix) {
				infos = append(infos, ObjectInfo{Key: k, Size: int64(len(o.data)), ModTime: o.mod})
			}
		}
		s.d.mu.RUnlock()
		sort.Slice(infos, func(i, j int) bool { return infos[i].Key < infos[j].Key })
		for _, info := range infos {
			if err := ctx.Err(); err != nil {
				yield(ObjectInfo{}, &OpError{"mem", "list", prefix, err})
				return
			}
			if !yield(info, nil) {
				return
			}
		}
	}
}

// Close does nothing: Guard marks the handle closed, and the objects stay for
// other handles.
func (s *memStore) Close() error { return nil }
