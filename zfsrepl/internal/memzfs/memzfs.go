// Package memzfs is an in-memory model of the ZFS operations replication
// uses, implementing zfsrepl.Sender and zfsrepl.Receiver for host tests of the
// engine and the transports. Streams carry a JSON header line and a
// deterministic payload; a receive cut midway keeps a resume token.
package memzfs

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cairn-backup/cairn/zfsrepl"
	"github.com/cairn-backup/cairn/zfsrepl/zfs"
)

// Pool is a set of in-memory filesystems.
type Pool struct {
	mu sync.Mutex
	// PayloadSize is the stream payload size of each snapshot.
	PayloadSize int
	fs          map[string]*fsys
	txg         uint64
	guid        uint64
	holds       map[string]map[string]bool // snapshot full name -> tags
	// Log records operations ("receive full p/a@s1", "destroy p/a@s1", ...).
	Log []string
	// Now, if set, is the creation time of snapshots taken through a
	// Sender (Snapshot); else creation times count seconds by txg.
	Now func() time.Time
}

type fsys struct {
	versions    []zfs.Version
	placeholder bool
	partial     *token
}

type token struct {
	ToGUID   uint64 `json:"toguid"`
	FromGUID uint64 `json:"fromguid,omitempty"`
	ToName   string `json:"toname"`
	Offset   int    `json:"offset"`
}

// New returns an empty pool; guidBase makes GUIDs of different pools differ.
func New(guidBase uint64) *Pool {
	return &Pool{PayloadSize: 64 << 10, fs: map[string]*fsys{}, guid: guidBase, holds: map[string]map[string]bool{}}
}

// CreateFS creates a filesystem (and its missing parents).
func (p *Pool) CreateFS(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	comps := strings.Split(name, "/")
	for i := 1; i <= len(comps); i++ {
		n := strings.Join(comps[:i], "/")
		if p.fs[n] == nil {
			p.fs[n] = &fsys{}
		}
	}
}

// Snapshot creates fs@name and returns it.
func (p *Pool) Snapshot(fs, name string) zfs.Version {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.txg++
	p.guid++
	v := zfs.Version{Type: zfs.Snapshot, Filesystem: fs, Name: name, GUID: p.guid*0x9E3779B97F4A7C15 | 1,
		CreateTXG: p.txg, Creation: time.Unix(int64(p.txg), 0).UTC()}
	f := p.fs[fs]
	f.versions = append(f.versions, v)
	return v
}

// Versions returns the versions of fs, oldest first.
func (p *Pool) Versions(fs string) []zfs.Version {
	p.mu.Lock()
	defer p.mu.Unlock()
	f := p.fs[fs]
	if f == nil {
		return nil
	}
	vs := slices.Clone(f.versions)
	zfs.SortVersions(vs)
	return vs
}

// Exists reports whether fs exists; placeholder says if it is one.
func (p *Pool) Exists(fs string) (exists, placeholder bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f := p.fs[fs]
	return f != nil, f != nil && f.placeholder
}

// Destroy destroys a snapshot or bookmark by full name; held snapshots fail.
func (p *Pool) Destroy(full string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.destroyLocked(full)
}

func (p *Pool) destroyLocked(full string) error {
	fs, typ, name, err := zfs.ParseVersionName(full)
	if err != nil {
		return err
	}
	if len(p.holds[full]) > 0 {
		return fmt.Errorf("cannot destroy %s: dataset is busy", full)
	}
	f := p.fs[fs]
	if f == nil {
		return fmt.Errorf("%s does not exist", full)
	}
	i := slices.IndexFunc(f.versions, func(v zfs.Version) bool { return v.Type == typ && v.Name == name })
	if i < 0 {
		return fmt.Errorf("%s does not exist", full)
	}
	f.versions = slices.Delete(f.versions, i, i+1)
	p.Log = append(p.Log, "destroy "+full)
	return nil
}

// Holds returns the hold tags of a snapshot.
func (p *Pool) Holds(full string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var tags []string
	for t := range p.holds[full] {
		tags = append(tags, t)
	}
	slices.Sort(tags)
	return tags
}

func (p *Pool) hold(full, tag string, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.holds[full] == nil {
		p.holds[full] = map[string]bool{}
	}
	if on {
		p.holds[full][tag] = true
	} else {
		delete(p.holds[full], tag)
	}
}

// Filesystems lists the filesystems below prefix (prefix itself excluded when
// exclusive), sorted.
func (p *Pool) Filesystems() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var res []string
	for n := range p.fs {
		res = append(res, n)
	}
	slices.Sort(res)
	return res
}

func payload(guid uint64, i int) byte { return byte(guid>>(8*(i%8))) ^ byte(i) ^ byte(i>>8) }

type header struct {
	Kind     zfsrepl.StepKind `json:"kind"`
	From     *zfs.Version     `json:"from,omitempty"`
	To       zfs.Version      `json:"to"`
	Offset   int              `json:"offset"`
	Size     int              `json:"size"`
	FromGUID uint64           `json:"fromguid,omitempty"`
}

// Sender serves a pool as a zfsrepl.Sender.
type Sender struct {
	Pool   *Pool
	Job    string
	Filter *zfsrepl.Filter
}

// ListFilesystems implements zfsrepl.Sender.
func (s *Sender) ListFilesystems(ctx context.Context) ([]zfs.Filesystem, error) {
	var res []zfs.Filesystem
	for _, n := range s.Pool.Filesystems() {
		if s.Filter == nil || s.Filter.Match(n) {
			res = append(res, zfs.Filesystem{Name: n})
		}
	}
	return res, nil
}

// ListVersions implements zfsrepl.Sender.
func (s *Sender) ListVersions(ctx context.Context, fs string) ([]zfs.Version, error) {
	return s.Pool.Versions(fs), nil
}

// ParseResumeToken implements zfsrepl.Sender.
func (s *Sender) ParseResumeToken(ctx context.Context, tok string) (zfs.ResumeInfo, error) {
	t, err := decodeToken(tok)
	if err != nil {
		return zfs.ResumeInfo{}, err
	}
	return zfs.ResumeInfo{Token: tok, ToGUID: t.ToGUID, FromGUID: t.FromGUID, ToName: t.ToName}, nil
}

func decodeToken(tok string) (token, error) {
	var t token
	b, err := hex.DecodeString(strings.TrimPrefix(tok, "1-"))
	if err != nil {
		return t, fmt.Errorf("bad token: %w", err)
	}
	return t, json.Unmarshal(b, &t)
}

func encodeToken(t token) string {
	b, _ := json.Marshal(t)
	return "1-" + hex.EncodeToString(b)
}

// HoldStep implements zfsrepl.Sender.
func (s *Sender) HoldStep(ctx context.Context, fs string, st zfsrepl.Step) error {
	if st.From != nil && st.From.Type == zfs.Snapshot {
		s.Pool.hold(fs+"@"+st.From.Name, zfsrepl.StepHoldTag(s.Job), true)
	}
	s.Pool.hold(fs+"@"+st.To.Name, zfsrepl.StepHoldTag(s.Job), true)
	return nil
}

// ReleaseStep implements zfsrepl.Sender.
func (s *Sender) ReleaseStep(ctx context.Context, fs string, st zfsrepl.Step) error {
	if st.From != nil {
		s.Pool.hold(fs+"@"+st.From.Name, zfsrepl.StepHoldTag(s.Job), false)
	}
	s.Pool.hold(fs+"@"+st.To.Name, zfsrepl.StepHoldTag(s.Job), false)
	return nil
}

// Send implements zfsrepl.Sender.
func (s *Sender) Send(ctx context.Context, fs string, st zfsrepl.Step) (io.ReadCloser, error) {
	h := header{Kind: st.Kind, From: st.From, To: st.To, Size: s.Pool.PayloadSize}
	if st.Kind == zfsrepl.StepResume {
		t, err := decodeToken(st.ResumeToken)
		if err != nil {
			return nil, err
		}
		h.Offset, h.FromGUID = t.Offset, t.FromGUID
	}
	vs := s.Pool.Versions(fs)
	if !slices.ContainsFunc(vs, func(v zfs.Version) bool { return v.Type == zfs.Snapshot && v.GUID == st.To.GUID }) {
		return nil, fmt.Errorf("send: %s@%s does not exist", fs, st.To.Name)
	}
	if st.From != nil {
		if !slices.ContainsFunc(vs, func(v zfs.Version) bool { return v.GUID == st.From.GUID && v.Name == st.From.Name }) {
			return nil, fmt.Errorf("send: %s%s does not exist", fs, st.From.RelName())
		}
		h.FromGUID = st.From.GUID
	}
	hb, _ := json.Marshal(h)
	body := make([]byte, 0, len(hb)+1+h.Size-h.Offset)
	body = append(append(body, hb...), '\n')
	for i := h.Offset; i < h.Size; i++ {
		body = append(body, payload(st.To.GUID, i))
	}
	return io.NopCloser(strings.NewReader(string(body))), nil
}

// MoveCursor implements zfsrepl.Sender.
func (s *Sender) MoveCursor(ctx context.Context, fs string, to zfs.Version) error {
	p := s.Pool
	p.mu.Lock()
	defer p.mu.Unlock()
	f := p.fs[fs]
	name := zfsrepl.CursorName(to.GUID, s.Job)
	f.versions = slices.DeleteFunc(f.versions, func(v zfs.Version) bool {
		return v.Type == zfs.Bookmark && zfsrepl.IsCursor(v.Name, s.Job) && v.Name != name
	})
	if !slices.ContainsFunc(f.versions, func(v zfs.Version) bool { return v.Name == name && v.Type == zfs.Bookmark }) {
		i := slices.IndexFunc(f.versions, func(v zfs.Version) bool { return v.Type == zfs.Snapshot && v.GUID == to.GUID })
		if i < 0 {
			return fmt.Errorf("cursor: %s@%s does not exist", fs, to.Name)
		}
		b := f.versions[i]
		b.Type, b.Name = zfs.Bookmark, name
		f.versions = append(f.versions, b)
	}
	return nil
}

// Receiver receives into a pool below Root.
type Receiver struct {
	Pool *Pool
	Root string
	Job  string
}

func (r *Receiver) target(fs string) (string, error) {
	if err := zfs.ValidateRelativePath(fs); err != nil {
		return "", err
	}
	return r.Root + "/" + fs, nil
}

// ListFilesystems implements zfsrepl.Receiver.
func (r *Receiver) ListFilesystems(ctx context.Context) ([]zfs.Filesystem, error) {
	var res []zfs.Filesystem
	for _, n := range r.Pool.Filesystems() {
		if rel, ok := strings.CutPrefix(n, r.Root+"/"); ok {
			_, ph := r.Pool.Exists(n)
			res = append(res, zfs.Filesystem{Name: rel, Placeholder: ph})
		}
	}
	return res, nil
}

// ListVersions implements zfsrepl.Receiver.
func (r *Receiver) ListVersions(ctx context.Context, fs string) ([]zfs.Version, error) {
	t, err := r.target(fs)
	if err != nil {
		return nil, err
	}
	vs := r.Pool.Versions(t)
	for i := range vs {
		vs[i].Filesystem = fs
	}
	return vs, nil
}

// ResumeToken implements zfsrepl.Receiver.
func (r *Receiver) ResumeToken(ctx context.Context, fs string) (string, error) {
	t, err := r.target(fs)
	if err != nil {
		return "", err
	}
	r.Pool.mu.Lock()
	defer r.Pool.mu.Unlock()
	if f := r.Pool.fs[t]; f != nil && f.partial != nil {
		return encodeToken(*f.partial), nil
	}
	return "", nil
}

// Receive implements zfsrepl.Receiver: it checks the stream's incremental
// base against the target's newest snapshot as zfs receive does, and keeps a
// partial state when the stream breaks.
func (r *Receiver) Receive(ctx context.Context, req zfsrepl.ReceiveRequest, stream io.Reader) error {
	t, err := r.target(req.Filesystem)
	if err != nil {
		return err
	}
	br := bufio.NewReader(stream)
	line, err := br.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("reading stream header: %w", err)
	}
	var h header
	if err := json.Unmarshal(line, &h); err != nil {
		return fmt.Errorf("bad stream header: %w", err)
	}
	p := r.Pool
	p.mu.Lock()
	comps := strings.Split(t, "/")
	for i := 1; i < len(comps); i++ {
		n := strings.Join(comps[:i], "/")
		if p.fs[n] == nil {
			p.fs[n] = &fsys{placeholder: true}
		}
	}
	f := p.fs[t]
	switch {
	case h.Kind == zfsrepl.StepResume:
		if f == nil || f.partial == nil || f.partial.ToGUID != h.To.GUID || f.partial.Offset != h.Offset {
			p.mu.Unlock()
			return errors.New("cannot resume: no matching partial state")
		}
	case h.FromGUID == 0:
		if f != nil && !f.placeholder && len(f.versions) > 0 {
			p.mu.Unlock()
			return fmt.Errorf("cannot receive new filesystem stream: destination %s exists", t)
		}
	default:
		if f == nil {
			p.mu.Unlock()
			return fmt.Errorf("cannot receive incremental stream: destination %s does not exist", t)
		}
		snaps := slices.DeleteFunc(slices.Clone(f.versions), func(v zfs.Version) bool { return v.Type != zfs.Snapshot })
		zfs.SortVersions(snaps)
		if len(snaps) == 0 || snaps[len(snaps)-1].GUID != h.FromGUID {
			p.mu.Unlock()
			return fmt.Errorf("cannot receive incremental stream: most recent snapshot of %s does not match incremental source", t)
		}
	}
	if f == nil {
		f = &fsys{}
		p.fs[t] = f
	}
	p.mu.Unlock()

	off := h.Offset
	buf := make([]byte, 32<<10)
	var readErr error
	for off < h.Size {
		n, err := br.Read(buf[:min(len(buf), h.Size-off)])
		for i := 0; i < n; i++ {
			if buf[i] != payload(h.To.GUID, off+i) {
				return fmt.Errorf("corrupt stream at offset %d", off+i)
			}
		}
		off += n
		if err != nil {
			readErr = err
			break
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if off < h.Size {
		f.partial = &token{ToGUID: h.To.GUID, FromGUID: h.FromGUID, ToName: h.To.FullName(), Offset: off}
		if readErr == nil || readErr == io.EOF {
			readErr = io.ErrUnexpectedEOF
		}
		p.Log = append(p.Log, fmt.Sprintf("partial %s@%s at %d", t, h.To.Name, off))
		return fmt.Errorf("receive %s: stream cut at %d of %d: %w", t, off, h.Size, readErr)
	}
	f.partial = nil
	f.placeholder = false
	p.txg++
	v := h.To
	v.Filesystem, v.CreateTXG = t, p.txg
	f.versions = append(f.versions, v)
	p.Log = append(p.Log, fmt.Sprintf("receive %s %s@%s from %d", h.Kind, t, v.Name, h.Offset))
	if r.Job != "" {
		tag := zfsrepl.LastReceivedHoldTag(r.Job)
		for full, tags := range p.holds {
			if strings.HasPrefix(full, t+"@") {
				delete(tags, tag)
			}
		}
		if p.holds[v.FullName()] == nil {
			p.holds[v.FullName()] = map[string]bool{}
		}
		p.holds[v.FullName()][tag] = true
	}
	return nil
}

// DestroySnapshots implements zfsrepl.Receiver.
func (r *Receiver) DestroySnapshots(ctx context.Context, fs string, snaps []zfs.Version) error {
	t, err := r.target(fs)
	if err != nil {
		return err
	}
	var errs []error
	for _, s := range snaps {
		if s.Type != zfs.Snapshot {
			errs = append(errs, fmt.Errorf("%s is not a snapshot", s.RelName()))
			continue
		}
		vs := r.Pool.Versions(t)
		i := slices.IndexFunc(vs, func(v zfs.Version) bool { return v.Type == zfs.Snapshot && v.Name == s.Name })
		if i < 0 {
			continue
		}
		if vs[i].GUID != s.GUID {
			errs = append(errs, fmt.Errorf("guid mismatch for %s", s.Name))
			continue
		}
		errs = append(errs, r.Pool.Destroy(t+"@"+s.Name))
	}
	return errors.Join(errs...)
}

// SnapshotAt creates fs@name with the creation time at (tests fake times).
func (p *Pool) SnapshotAt(fs, name string, at time.Time) zfs.Version {
	v := p.Snapshot(fs, name)
	p.mu.Lock()
	defer p.mu.Unlock()
	f := p.fs[fs]
	for i := range f.versions {
		if f.versions[i].GUID == v.GUID {
			f.versions[i].Creation = at
		}
	}
	v.Creation = at
	return v
}

// SnapshotHolds implements zfsrepl.HoldLister.
func (s *Sender) SnapshotHolds(ctx context.Context, fs, snapshot string) ([]string, error) {
	return s.Pool.Holds(fs + "@" + snapshot), nil
}

// DestroySnapshots implements zfsrepl.SenderPruner: snapshots whose name and
// GUID match are destroyed; held ones fail.
func (s *Sender) DestroySnapshots(ctx context.Context, fs string, snaps []zfs.Version) error {
	var errs []error
	for _, sn := range snaps {
		vs := s.Pool.Versions(fs)
		i := slices.IndexFunc(vs, func(v zfs.Version) bool { return v.Type == zfs.Snapshot && v.Name == sn.Name })
		if i < 0 {
			continue
		}
		if vs[i].GUID != sn.GUID {
			errs = append(errs, fmt.Errorf("guid mismatch for %s", sn.Name))
			continue
		}
		errs = append(errs, s.Pool.Destroy(fs+"@"+sn.Name))
	}
	return errors.Join(errs...)
}

// Snapshot implements zfsrepl.SnapshotTarget.
func (s *Sender) Snapshot(ctx context.Context, fs, name string) error {
	if s.Filter != nil && !s.Filter.Match(fs) {
		return fmt.Errorf("refused: %s not selected", fs)
	}
	if slices.ContainsFunc(s.Pool.Versions(fs), func(v zfs.Version) bool { return v.Type == zfs.Snapshot && v.Name == name }) {
		return fmt.Errorf("%s@%s: dataset already exists", fs, name)
	}
	if s.Pool.Now != nil {
		s.Pool.SnapshotAt(fs, name, s.Pool.Now())
	} else {
		s.Pool.Snapshot(fs, name)
	}
	return nil
}
