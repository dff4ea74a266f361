package zfs

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	gozfs "github.com/mistifyio/go-zfs/v3"

	"github.com/cairn-backup/cairn/internal/proc"
)

// Runner runs zfs commands. The zero value runs "zfs" from PATH and logs
// nothing.
type Runner struct {
	// Bin is the zfs binary; "" means "zfs" from PATH.
	Bin string
	// Logger receives one debug line per command (arguments only: never
	// stream contents or keys); nil discards.
	Logger *slog.Logger
}

func (r *Runner) bin() string {
	if r == nil || r.Bin == "" {
		return "zfs"
	}
	return r.Bin
}

func (r *Runner) log(args []string) {
	if r != nil && r.Logger != nil {
		r.Logger.Debug("zfs", "args", args)
	}
}

// command is zfs with args, run as every child process of cairn runs
// (internal/proc): the tail of its stderr in errors, SIGTERM then SIGKILL when
// its context ends.
func (r *Runner) command(args ...string) *proc.Cmd {
	return &proc.Cmd{Path: r.bin(), Args: args, Program: "zfs"}
}

// commandError turns a *proc.Error of the command shown as args into a
// *CommandError.
func commandError(args []string, err error) error {
	var pe *proc.Error
	if errors.As(err, &pe) {
		return &CommandError{Args: args, Err: pe.Err, Stderr: pe.Stderr}
	}
	return err
}

// run runs zfs with args and returns its stdout.
func (r *Runner) run(ctx context.Context, stdin io.Reader, args ...string) ([]byte, error) {
	r.log(args)
	out, err := r.command(args...).Output(ctx, stdin)
	if err != nil {
		return nil, commandError(append([]string{"zfs"}, args...), err)
	}
	return out, nil
}

// lines splits tab-separated output of `zfs ... -H` into fields.
func lines(out []byte) [][]string {
	var res [][]string
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		l := strings.TrimRight(sc.Text(), "\r")
		if l == "" {
			continue
		}
		res = append(res, strings.Split(l, "\t"))
	}
	return res
}

// ListFilesystems lists root and every filesystem and volume below it; root
// "" lists those of every imported pool. A root that does not exist gives an
// empty list and no error.
func (r *Runner) ListFilesystems(ctx context.Context, root string) ([]Filesystem, error) {
	args := []string{"list", "-H", "-p", "-r", "-t", "filesystem,volume",
		"-o", "name," + PlaceholderProperty + ",receive_resume_token,encryption"}
	if root != "" {
		if err := ValidateFilesystem(root); err != nil {
			return nil, err
		}
		args = append(args, root)
	}
	out, err := r.run(ctx, nil, args...)
	if err != nil {
		var ce *CommandError
		if errors.As(err, &ce) && ce.NotExist() {
			return nil, nil
		}
		return nil, err
	}
	var res []Filesystem
	for _, f := range lines(out) {
		if len(f) != 4 {
			return nil, fmt.Errorf("zfs list: unexpected line %q", strings.Join(f, "\t"))
		}
		fs := Filesystem{Name: f[0], Placeholder: f[1] == "on"}
		if f[2] != "-" && f[2] != "" {
			fs.ResumeToken = f[2]
		}
		fs.Encrypted = f[3] != "off" && f[3] != "-" && f[3] != ""
		res = append(res, fs)
	}
	return res, nil
}

// GetFilesystem returns one filesystem, or ok=false when it does not exist.
func (r *Runner) GetFilesystem(ctx context.Context, name string) (fs Filesystem, ok bool, err error) {
	if err := ValidateFilesystem(name); err != nil {
		return Filesystem{}, false, err
	}
	out, err := r.run(ctx, nil, "list", "-H", "-p", "-d", "0", "-t", "filesystem,volume",
		"-o", "name,"+PlaceholderProperty+",receive_resume_token,encryption", name)
	if err != nil {
		var ce *CommandError
		if errors.As(err, &ce) && ce.NotExist() {
			return Filesystem{}, false, nil
		}
		return Filesystem{}, false, err
	}
	l := lines(out)
	if len(l) != 1 || len(l[0]) != 4 {
		return Filesystem{}, false, fmt.Errorf("zfs list %s: unexpected output %q", name, out)
	}
	f := l[0]
	fs = Filesystem{Name: f[0], Placeholder: f[1] == "on", Encrypted: f[3] != "off" && f[3] != "-"}
	if f[2] != "-" && f[2] != "" {
		fs.ResumeToken = f[2]
	}
	return fs, true, nil
}

// ListVersions lists the snapshots and bookmarks of fs (not of its children),
// oldest first (by createtxg, snapshots before bookmarks of the same txg).
func (r *Runner) ListVersions(ctx context.Context, fs string) ([]Version, error) {
	if err := ValidateFilesystem(fs); err != nil {
		return nil, err
	}
	out, err := r.run(ctx, nil, "list", "-H", "-p", "-d", "1", "-t", "snapshot,bookmark",
		"-o", "name,guid,createtxg,creation", fs)
	if err != nil {
		return nil, err
	}
	var res []Version
	for _, f := range lines(out) {
		if len(f) != 4 {
			return nil, fmt.Errorf("zfs list: unexpected line %q", strings.Join(f, "\t"))
		}
		vfs, typ, name, err := ParseVersionName(f[0])
		if err != nil {
			return nil, fmt.Errorf("zfs list: %w", err)
		}
		if vfs != fs {
			continue
		}
		guid, err1 := strconv.ParseUint(f[1], 10, 64)
		txg, err2 := strconv.ParseUint(f[2], 10, 64)
		creation, err3 := strconv.ParseInt(f[3], 10, 64)
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, fmt.Errorf("zfs list: line %q: %w", strings.Join(f, "\t"), err)
		}
		res = append(res, Version{Type: typ, Filesystem: fs, Name: name, GUID: guid,
			CreateTXG: txg, Creation: time.Unix(creation, 0).UTC()})
	}
	SortVersions(res)
	return res, nil
}

// SortVersions sorts versions oldest first: by createtxg, then snapshots
// before bookmarks, then by name.
func SortVersions(vs []Version) {
	slices.SortStableFunc(vs, func(a, b Version) int {
		if a.CreateTXG != b.CreateTXG {
			if a.CreateTXG < b.CreateTXG {
				return -1
			}
			return 1
		}
		if a.Type != b.Type {
			if a.Type == Snapshot {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
}

// Snapshot creates fs@name (go-zfs).
func (r *Runner) Snapshot(ctx context.Context, fs, name string) error {
	if err := ValidateFilesystem(fs); err != nil {
		return err
	}
	if err := ValidateComponent(name); err != nil {
		return err
	}
	r.log([]string{"snapshot", fs + "@" + name})
	if r.Bin != "" {
		_, err := r.run(ctx, nil, "snapshot", fs+"@"+name)
		return err
	}
	d := &gozfs.Dataset{Name: fs}
	if _, err := d.Snapshot(name, false); err != nil {
		return goZFSError(err)
	}
	return nil
}

// CreateFilesystem creates fs with properties, and its missing parents when
// parents is set (go-zfs runs the command when it can).
func (r *Runner) CreateFilesystem(ctx context.Context, fs string, props map[string]string, parents bool) error {
	if err := ValidateFilesystem(fs); err != nil {
		return err
	}
	args := []string{"create"}
	if parents {
		args = append(args, "-p")
	}
	keys := make([]string, 0, len(props))
	for k := range props {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if strings.ContainsAny(k, "=\x00") || strings.HasPrefix(k, "-") || strings.ContainsRune(props[k], 0) {
			return fmt.Errorf("zfs create %s: bad property %q", fs, k)
		}
		args = append(args, "-o", k+"="+props[k])
	}
	if !parents && r.Bin == "" {
		r.log(append(args, fs))
		if _, err := gozfs.CreateFilesystem(fs, props); err != nil {
			return goZFSError(err)
		}
		return nil
	}
	_, err := r.run(ctx, nil, append(args, fs)...)
	return err
}

// SetProperty sets a property on a dataset.
func (r *Runner) SetProperty(ctx context.Context, ds, key, value string) error {
	if err := ValidateFilesystem(ds); err != nil {
		return err
	}
	if key == "" || strings.ContainsAny(key, "=\x00") || strings.HasPrefix(key, "-") || strings.ContainsRune(value, 0) {
		return fmt.Errorf("zfs set %s: bad property %q", ds, key)
	}
	_, err := r.run(ctx, nil, "set", key+"="+value, ds)
	return err
}

// GetProperty returns the value of one property of a dataset, snapshot or bookmark.
func (r *Runner) GetProperty(ctx context.Context, ds, key string) (string, error) {
	if err := validateAnyName(ds); err != nil {
		return "", err
	}
	if key == "" || strings.ContainsAny(key, ",=\x00 ") || strings.HasPrefix(key, "-") {
		return "", fmt.Errorf("zfs get %s: bad property %q", ds, key)
	}
	out, err := r.run(ctx, nil, "get", "-H", "-p", "-o", "value", key, ds)
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(out), "\r\n"), nil
}

func validateAnyName(name string) error {
	if strings.ContainsAny(name, "@#") {
		_, _, _, err := ParseVersionName(name)
		return err
	}
	return ValidateFilesystem(name)
}

// goZFSError turns a go-zfs error into a *CommandError with its stderr.
func goZFSError(err error) error {
	var ge gozfs.Error
	if errors.As(err, &ge) {
		return &CommandError{Args: strings.Fields(ge.Debug), Err: ge.Err, Stderr: ge.Stderr}
	}
	return err
}

// Bookmark creates the bookmark fs#name from the snapshot or bookmark from.
func (r *Runner) Bookmark(ctx context.Context, from Version, name string) error {
	if err := ValidateVersion(from); err != nil {
		return err
	}
	bm := Version{Type: Bookmark, Filesystem: from.Filesystem, Name: name}
	if err := ValidateVersion(bm); err != nil {
		return err
	}
	_, err := r.run(ctx, nil, "bookmark", from.FullName(), bm.FullName())
	return err
}

// Hold places the user hold tag on snapshot ("fs@snap"). Holding a snapshot
// that already carries the tag is not an error.
func (r *Runner) Hold(ctx context.Context, tag, snapshot string) error {
	if err := checkSnapshot(snapshot); err != nil {
		return err
	}
	if err := ValidateHoldTag(tag); err != nil {
		return err
	}
	_, err := r.run(ctx, nil, "hold", tag, snapshot)
	var ce *CommandError
	if errors.As(err, &ce) && strings.Contains(ce.Stderr, "tag already exists") {
		return nil
	}
	return err
}

// Release removes the user hold tag from snapshot. Releasing a tag that is not
// there is not an error.
func (r *Runner) Release(ctx context.Context, tag, snapshot string) error {
	if err := checkSnapshot(snapshot); err != nil {
		return err
	}
	if err := ValidateHoldTag(tag); err != nil {
		return err
	}
	_, err := r.run(ctx, nil, "release", tag, snapshot)
	var ce *CommandError
	if errors.As(err, &ce) && strings.Contains(ce.Stderr, "no such tag") {
		return nil
	}
	return err
}

// Holds returns the hold tags on snapshot.
func (r *Runner) Holds(ctx context.Context, snapshot string) ([]string, error) {
	if err := checkSnapshot(snapshot); err != nil {
		return nil, err
	}
	out, err := r.run(ctx, nil, "holds", "-H", snapshot)
	if err != nil {
		return nil, err
	}
	var tags []string
	for _, f := range lines(out) {
		if len(f) >= 2 {
			tags = append(tags, f[1])
		}
	}
	return tags, nil
}

func checkSnapshot(name string) error {
	_, typ, _, err := ParseVersionName(name)
	if err != nil {
		return err
	}
	if typ != Snapshot {
		return nameErr(name, "not a snapshot")
	}
	return nil
}

// DestroyVersion destroys one snapshot or bookmark. It never destroys a
// filesystem: v must name a snapshot or a bookmark.
func (r *Runner) DestroyVersion(ctx context.Context, v Version) error {
	if err := ValidateVersion(v); err != nil {
		return err
	}
	_, err := r.run(ctx, nil, "destroy", v.FullName())
	return err
}

// DestroyFilesystem destroys one filesystem that has no children (no -r).
func (r *Runner) DestroyFilesystem(ctx context.Context, fs string) error {
	if err := ValidateFilesystem(fs); err != nil {
		return err
	}
	_, err := r.run(ctx, nil, "destroy", fs)
	return err
}

// ReceiveResumeToken returns the receive_resume_token of fs, "" when there is
// none or fs does not exist.
func (r *Runner) ReceiveResumeToken(ctx context.Context, fs string) (string, error) {
	f, ok, err := r.GetFilesystem(ctx, fs)
	if err != nil || !ok {
		return "", err
	}
	return f.ResumeToken, nil
}

// ParseResumeToken asks `zfs send -nv -t` what an interrupted send was.
func (r *Runner) ParseResumeToken(ctx context.Context, token string) (ResumeInfo, error) {
	if err := validateToken(token); err != nil {
		return ResumeInfo{}, err
	}
	r.log([]string{"send", "-nv", "-t", "<token>"})
	out, err := r.command("send", "-nv", "-t", token).CombinedOutput(ctx)
	if err != nil {
		return ResumeInfo{}, commandError([]string{"zfs", "send", "-nv", "-t", "<token>"}, err)
	}
	return parseResumeOutput(token, string(out))
}

func validateToken(token string) error {
	if token == "" || len(token) > 1<<20 {
		return errors.New("zfs: resume token empty or too long")
	}
	for i := 0; i < len(token); i++ {
		c := token[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == '-') {
			return fmt.Errorf("zfs: resume token has a bad character at offset %d", i)
		}
	}
	return nil
}

// parseResumeOutput reads the nvlist dump of `zfs send -nv -t TOKEN`.
func parseResumeOutput(token, out string) (ResumeInfo, error) {
	ri := ResumeInfo{Token: token}
	for _, l := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(l), " = ")
		if !ok {
			continue
		}
		switch k {
		case "toguid", "fromguid":
			n, err := strconv.ParseUint(strings.TrimPrefix(v, "0x"), 16, 64)
			if err != nil {
				return ri, fmt.Errorf("zfs: resume token %s %q: %w", k, v, err)
			}
			if k == "toguid" {
				ri.ToGUID = n
			} else {
				ri.FromGUID = n
			}
		case "toname":
			ri.ToName = v
		case "rawok":
			ri.Raw = true
		}
	}
	if ri.ToGUID == 0 || ri.ToName == "" {
		return ri, fmt.Errorf("zfs: cannot read toguid/toname from `zfs send -nv -t` output %q", out)
	}
	return ri, nil
}

// SendArgs says what to send. Exactly one of To and ResumeToken is set.
type SendArgs struct {
	From        string // "fs@snap" or "fs#bookmark" for an incremental (-i); "" for a full send
	To          string // "fs@snap"
	ResumeToken string // resume an interrupted send (-t); From and To must be empty
	Raw         bool   // -w: send encrypted data as it is on disk
}

func (a SendArgs) args() ([]string, error) {
	if a.ResumeToken != "" {
		if a.From != "" || a.To != "" {
			return nil, errors.New("zfs send: a resume token excludes From and To")
		}
		if err := validateToken(a.ResumeToken); err != nil {
			return nil, err
		}
		return []string{"send", "-t", a.ResumeToken}, nil
	}
	if err := checkSnapshot(a.To); err != nil {
		return nil, fmt.Errorf("zfs send: %w", err)
	}
	args := []string{"send"}
	if a.Raw {
		args = append(args, "-w")
	}
	if a.From != "" {
		ffs, _, _, err := ParseVersionName(a.From)
		if err != nil {
			return nil, fmt.Errorf("zfs send: %w", err)
		}
		tfs, _, _, _ := ParseVersionName(a.To)
		if ffs != tfs {
			return nil, fmt.Errorf("zfs send: from %s and to %s are on different filesystems", a.From, a.To)
		}
		args = append(args, "-i", a.From)
	}
	return append(args, a.To), nil
}

// Send starts `zfs send` and returns its stream. Read returns the command's
// failure (a *CommandError with its stderr) instead of io.EOF when the
// command fails, so a broken send never looks like a complete stream. Close
// waits for the command; closing before the end stops it (SIGTERM, then
// SIGKILL), and Close then returns nil unless the command had failed on its
// own.
func (r *Runner) Send(ctx context.Context, a SendArgs) (io.ReadCloser, error) {
	args, err := a.args()
	if err != nil {
		return nil, err
	}
	logged := args
	if a.ResumeToken != "" {
		logged = []string{"send", "-t", "<token>"}
	}
	r.log(logged)
	shown := append([]string{"zfs"}, logged...)
	s, err := r.command(args...).Reader(ctx)
	if err != nil {
		return nil, commandError(shown, err)
	}
	return &sendStream{s: s, args: shown}, nil
}

// sendStream is the stream of zfs send, with its errors as *CommandError.
type sendStream struct {
	s    *proc.Reader
	args []string
}

func (s *sendStream) Read(p []byte) (int, error) {
	n, err := s.s.Read(p)
	return n, commandError(s.args, err)
}

func (s *sendStream) Close() error { return commandError(s.args, s.s.Close()) }

// ReceiveArgs says how to receive.
type ReceiveArgs struct {
	// Force rolls the target back / replaces a placeholder (-F). Only for a
	// full receive into a placeholder.
	Force bool
	// Mount the received filesystem; the default receives with -u.
	Mount bool
	// NotResumable receives without -s.
	NotResumable bool
	// Properties are set on the received filesystem (-o key=value).
	Properties map[string]string
}

// Receive runs `zfs receive -s -u fs` with stream on its stdin. When the
// stream fails (a read error), the receive is aborted: with -s, the partial
// state is kept and fs gets a receive_resume_token. The error carries stderr
// and, if reading the stream failed, that error too.
func (r *Runner) Receive(ctx context.Context, fs string, a ReceiveArgs, stream io.Reader) error {
	if err := ValidateFilesystem(fs); err != nil {
		return err
	}
	args := []string{"receive"}
	if !a.NotResumable {
		args = append(args, "-s")
	}
	if !a.Mount {
		args = append(args, "-u")
	}
	if a.Force {
		args = append(args, "-F")
	}
	keys := make([]string, 0, len(a.Properties))
	for k := range a.Properties {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.HasPrefix(k, "-") {
			return fmt.Errorf("zfs receive %s: bad property %q", fs, k)
		}
		args = append(args, "-o", k+"="+a.Properties[k])
	}
	args = append(args, fs)
	r.log(args)
	shown := append([]string{"zfs"}, args...)
	stdin, err := r.command(args...).Writer(ctx, nil) // its stdout joins stderr
	if err != nil {
		return commandError(shown, err)
	}
	_, copyErr := io.CopyBuffer(stdin, markedReader{stream}, make([]byte, proc.PipeSize))
	var writeErr error
	if copyErr != nil {
		var pe *readError
		if !errors.As(copyErr, &pe) {
			writeErr = copyErr // zfs receive stopped reading: its own error says why
			copyErr = nil
		}
	}
	werr := stdin.Close()
	if werr == nil && copyErr == nil {
		return nil
	}
	ce := &CommandError{Args: shown, Err: writeErr, Stderr: stdin.Stderr()}
	if werr != nil {
		if err, ok := commandError(shown, werr).(*CommandError); ok {
			ce = err
		} else {
			ce.Err = werr
		}
	}
	if copyErr != nil {
		return fmt.Errorf("zfs receive %s: reading the stream: %w (receive: %w)", fs, errors.Unwrap(copyErr), ce)
	}
	return ce
}

// readError marks an error of the stream given to Receive, so that it is told
// apart from zfs receive refusing the data.
type readError struct{ err error }

func (e *readError) Error() string { return e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

// markedReader wraps the errors of the stream given to Receive as *readError.
type markedReader struct{ r io.Reader }

func (m markedReader) Read(p []byte) (int, error) {
	n, err := m.r.Read(p)
	if err != nil && err != io.EOF {
		err = &readError{err}
	}
	return n, err
}
