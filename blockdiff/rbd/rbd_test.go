//go:build ceph

package rbd

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	librados "github.com/ceph/go-ceph/rados"
	librbd "github.com/ceph/go-ceph/rbd"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/internal/testenv"
	"github.com/cairn-backup/cairn/objstore"
	_ "github.com/cairn-backup/cairn/objstore/rados"
	_ "github.com/cairn-backup/cairn/objstore/s3"
)

const (
	mib     = 1 << 20
	bs      = 4 * mib  // the repository's block size = RBD's object size
	imgSize = 48 * mib // 12 blocks
)

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// pattern returns block-sized data determined by seed.
func pattern(seed uint64, n int) []byte {
	r := mrand.New(mrand.NewPCG(seed, seed*7+1))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// cluster is the test cluster: a Conn for the code under test and a raw
// librbd I/O context for the test's own writes.
type cluster struct {
	env   testenv.CephEnv
	conn  *Conn
	ioctx *librados.IOContext
}

func newCluster(t testing.TB) *cluster {
	t.Helper()
	env := testenv.Ceph(t)
	c, err := Connect(ConnConfig{Conf: env.Conf, Timeout: 60 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	ioctx, err := c.conn.OpenIOContext(env.Pool)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ioctx.Destroy)
	return &cluster{env: env, conn: c, ioctx: ioctx}
}

// image creates an image that is removed, with its snapshots, at the end.
func (c *cluster) image(t testing.TB, size int64) (string, *librbd.Image) {
	t.Helper()
	name := "cairn-test-" + randHex(5)
	opts := librbd.NewRbdImageOptions()
	defer opts.Destroy()
	if err := librbd.CreateImage(c.ioctx, name, uint64(size), opts); err != nil {
		t.Fatalf("CreateImage: %v", err)
	}
	img, err := librbd.OpenImage(c.ioctx, name, librbd.NoSnapshot)
	if err != nil {
		t.Fatalf("OpenImage: %v", err)
	}
	t.Cleanup(func() {
		img.Close()
		c.removeImage(t, name)
	})
	return name, img
}

func (c *cluster) removeImage(t testing.TB, name string) {
	img, err := librbd.OpenImage(c.ioctx, name, librbd.NoSnapshot)
	if err != nil {
		return
	}
	if snaps, err := img.GetSnapshotNames(); err == nil {
		for _, s := range snaps {
			_ = img.GetSnapshot(s.Name).Remove()
		}
	}
	img.Close()
	if err := librbd.RemoveImage(c.ioctx, name); err != nil {
		t.Errorf("RemoveImage %s: %v", name, err)
	}
}

func (c *cluster) snapshots(t testing.TB, img *librbd.Image) []string {
	t.Helper()
	snaps, err := img.GetSnapshotNames()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range snaps {
		names = append(names, s.Name)
	}
	return names
}

// export returns the bytes of `rbd export SPEC -` (SPEC may name a snapshot).
func (c *cluster) export(t testing.TB, spec string) []byte {
	t.Helper()
	f := filepath.Join(t.TempDir(), "export")
	cmd := exec.Command("rbd", "--conf", c.env.Conf, "export", spec, f)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("rbd export %s: %v\n%s", spec, err, out)
	}
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func write(t testing.TB, img *librbd.Image, off int64, b []byte) {
	t.Helper()
	if _, err := img.WriteAt(b, off); err != nil {
		t.Fatalf("WriteAt %d: %v", off, err)
	}
}

// openRepoStore opens an empty store for a repository on the named backend.
func openRepoStore(t testing.TB, kind string, c *cluster) objstore.Store {
	t.Helper()
	var url string
	switch kind {
	case "mem":
		url = "mem://" + strings.ReplaceAll(t.Name(), "/", "_") + randHex(4)
	case "rados":
		url = "rados://" + c.env.Pool + "/repo-" + randHex(4) + "?namespace=cairn-test-" + randHex(4)
	case "s3":
		env := testenv.S3(t)
		bucket := "cairn-rbd-" + randHex(5)
		cli := s3.NewFromConfig(aws.Config{Region: env.Region,
			Credentials: credentials.NewStaticCredentialsProvider(env.AccessKey, env.SecretKey, "")},
			func(o *s3.Options) { o.BaseEndpoint = aws.String(env.Endpoint); o.UsePathStyle = true })
		if _, err := cli.CreateBucket(t.Context(), &s3.CreateBucketInput{Bucket: &bucket}); err != nil {
			t.Fatalf("CreateBucket: %v", err)
		}
		url = "s3://" + bucket + "/repo?endpoint=" + env.Endpoint + "&region=" + env.Region + "&path_style=true"
	}
	s, err := objstore.Open(t.Context(), url)
	if err != nil {
		t.Fatalf("Open %s: %v", url, err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		for info, err := range s.List(ctx, "") {
			if err != nil {
				break
			}
			_ = s.Delete(ctx, info.Key)
		}
		s.Close()
	})
	return s
}

func newRepo(t testing.TB, s objstore.Store) *blockdiff.Repository {
	t.Helper()
	r, err := blockdiff.Init(t.Context(), s, blockdiff.InitConfig{BlockSize: bs}, blockdiff.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// readLog records the blocks that sources of one image read.
type readLog struct {
	mu     sync.Mutex
	image  string
	blocks map[int64]int64 // block index -> bytes read
}

func watchReads(t *testing.T, image string) *readLog {
	l := &readLog{image: image, blocks: map[int64]int64{}}
	onRead = func(u URL, off, n int64) {
		if u.Image != image {
			return
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		for o := off; o < off+n; {
			end := min(off+n, (o/bs+1)*bs)
			l.blocks[o/bs] += end - o
			o = end
		}
	}
	t.Cleanup(func() { onRead = nil })
	return l
}

// take returns the sorted blocks read since the last take and forgets them.
func (l *readLog) take() []int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []int64
	for b := range l.blocks {
		out = append(out, b)
	}
	slices.Sort(out)
	clear(l.blocks)
	return out
}

func clock(t time.Time) func() time.Time { return func() time.Time { return t } }

// TestBackupIncrementalRestore is the Benji flow on each repository backend:
// a full backup of an image written with known patterns, an incremental one
// that reads only the changed extents, snapshot rotation, a byte-identical
// restore, and the fallback to a full read when the base snapshot is gone.
func TestBackupIncrementalRestore(t *testing.T) {
	for _, kind := range []string{"mem", "rados", "s3"} {
		t.Run(kind, func(t *testing.T) { testBackupFlow(t, kind) })
	}
}

func testBackupFlow(t *testing.T, kind string) {
	ctx := t.Context()
	c := newCluster(t)
	repo := newRepo(t, openRepoStore(t, kind, c))
	name, img := c.image(t, imgSize)
	u := URL{Pool: c.env.Pool, Image: name}
	reads := watchReads(t, name)

	// Blocks 0..5 hold patterns; 6..11 were never written.
	for i := range 6 {
		write(t, img, int64(i)*bs, pattern(uint64(i), bs))
	}
	if _, err := img.CreateSnapshot("keep-me"); err != nil { // not ours: never rotated
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 26, 7, 30, 0, 0, time.UTC)
	opts := BackupOptions{Volume: "pvc-a", Now: clock(t0), Labels: map[string]string{"pvc": "a"}}
	full, err := c.conn.Backup(ctx, repo, u, opts)
	if err != nil {
		t.Fatal(err)
	}
	if full.Base != "" || full.FullReason != "no base" || full.Snapshot != "b-20261126T073000Z" {
		t.Errorf("first backup: base %q, reason %q, snapshot %q", full.Base, full.FullReason, full.Snapshot)
	}
	if got := reads.take(); !slices.Equal(got, []int64{0, 1, 2, 3, 4, 5}) {
		t.Errorf("full backup read blocks %v, want the allocated 0..5 only", got)
	}
	if full.BytesRead != 6*bs || full.Version.Stats.BytesRead != 6*bs {
		t.Errorf("full backup read %d bytes (stats %d), want %d", full.BytesRead, full.Version.Stats.BytesRead, 6*bs)
	}
	if l := full.Version.Labels; l[LabelSnapshot] != full.Snapshot || l[LabelImage] != u.Spec() || l["pvc"] != "a" || l[LabelSnapshotID] == "" {
		t.Errorf("labels %v", l)
	}

	// Changes: 4 KiB inside block 2, block 4 zeroed, block 9 new.
	write(t, img, 2*bs+12345, bytes.Repeat([]byte{0xAB}, 4096))
	write(t, img, 4*bs, make([]byte, bs))
	write(t, img, 9*bs, pattern(99, bs))
	opts.Now = clock(t0.Add(24 * time.Hour))
	inc, err := c.conn.Backup(ctx, repo, u, opts)
	if err != nil {
		t.Fatal(err)
	}
	if inc.Base != full.Version.ID || inc.BaseSnapshot != full.Snapshot || inc.FullReason != "" {
		t.Errorf("incremental: base %q (snapshot %q), reason %q; want %s", inc.Base, inc.BaseSnapshot, inc.FullReason, full.Version.ID)
	}
	// Every changed block is read; other reads are the hint-verification
	// sample (allocated unchanged blocks), counted in BlocksVerified.
	got := reads.take()
	changed := []int64{2, 4, 9}
	var verified []int64
	for _, b := range changed {
		if !slices.Contains(got, b) {
			t.Errorf("incremental backup did not read changed block %d (read %v)", b, got)
		}
	}
	for _, b := range got {
		if !slices.Contains(changed, b) {
			verified = append(verified, b)
			if b > 5 {
				t.Errorf("incremental backup read block %d, which is unallocated", b)
			}
		}
	}
	st := inc.Version.Stats
	if int64(len(verified)) > st.BlocksVerified {
		t.Errorf("read %d unchanged blocks %v, but only %d were verified", len(verified), verified, st.BlocksVerified)
	}
	if want := int64(len(changed)+len(verified)) * bs; inc.BytesRead != want || st.BytesRead != want {
		t.Errorf("incremental read %d bytes (stats %d), want %d: changed blocks %v + verified %v",
			inc.BytesRead, st.BytesRead, want, changed, verified)
	}
	if st.BlocksNew != 2 || st.BlocksSparse != 1 || st.BlocksNew+st.BlocksSparse+st.BlocksFromBase+st.BlocksVerified != 12 {
		t.Errorf("incremental stats: %+v (want 2 new blocks, 2 and 9, and block 4 sparse)", st)
	}
	t.Logf("incremental: read blocks %v (%d verified of %d sampled), stats %+v", got, len(verified), st.BlocksVerified, st)

	// Rotation: exactly the newest b- snapshot, and the foreign one, remain.
	if snaps := c.snapshots(t, img); !slices.Equal(snaps, []string{"keep-me", inc.Snapshot}) {
		t.Errorf("snapshots after the incremental backup: %v, want [keep-me %s]", snaps, inc.Snapshot)
	}
	if !slices.Equal(inc.RemovedSnapshots, []string{full.Snapshot}) {
		t.Errorf("removed %v, want [%s]", inc.RemovedSnapshots, full.Snapshot)
	}

	// Restore both versions: byte-identical to rbd export of the snapshots.
	// (The first snapshot is gone: compare with the patterns written.)
	want := c.export(t, u.Spec()+"@"+inc.Snapshot)
	dest := URL{Pool: c.env.Pool, Image: name + "-restored"}
	t.Cleanup(func() { c.removeImage(t, dest.Image) })
	if err := c.conn.Restore(ctx, repo, inc.Version.ID, dest, RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := c.export(t, dest.Spec()); !bytes.Equal(got, want) {
		t.Fatalf("restore of %s differs from rbd export of %s (%d vs %d bytes)", inc.Version.ID, inc.Snapshot, len(got), len(want))
	}
	err = c.conn.Restore(ctx, repo, full.Version.ID, dest, RestoreOptions{})
	if !errors.Is(err, ErrImageExists) {
		t.Fatalf("restore over an existing image without force: %v", err)
	}
	if err := c.conn.Restore(ctx, repo, full.Version.ID, dest, RestoreOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	first := make([]byte, imgSize)
	for i := range 6 {
		copy(first[i*bs:], pattern(uint64(i), bs))
	}
	if got := c.export(t, dest.Spec()); !bytes.Equal(got, first) {
		t.Fatalf("forced restore of the full version differs from the patterns written")
	}

	// The base snapshot is deleted: the next backup reads everything.
	if err := img.GetSnapshot(inc.Snapshot).Remove(); err != nil {
		t.Fatal(err)
	}
	opts.Now = clock(t0.Add(48 * time.Hour))
	third, err := c.conn.Backup(ctx, repo, u, opts)
	if err != nil {
		t.Fatal(err)
	}
	if third.Base != "" || third.FullReason != "no base" {
		t.Errorf("with the base snapshot deleted: base %q, reason %q", third.Base, third.FullReason)
	}
	if got := reads.take(); !slices.Equal(got, []int64{0, 1, 2, 3, 4, 5, 9}) {
		t.Errorf("full read after the base snapshot was deleted read blocks %v, want every allocated block", got)
	}
	if snaps := c.snapshots(t, img); !slices.Equal(snaps, []string{"keep-me", third.Snapshot}) {
		t.Errorf("snapshots: %v", snaps)
	}
}

// TestErrors checks the messages for a missing pool, image and snapshot, an
// unreachable cluster, and that a failed backup removes its snapshot.
func TestErrors(t *testing.T) {
	ctx := t.Context()
	c := newCluster(t)
	repo := newRepo(t, openRepoStore(t, "mem", c))
	name, img := c.image(t, 8*mib)
	for _, tc := range []struct {
		u    URL
		want string
	}{
		{URL{Pool: "no-such-pool-" + randHex(3), Image: "x", Snapshot: "s"}, "does not exist"},
		{URL{Pool: c.env.Pool, Image: "no-such-image", Snapshot: "s"}, "image " + c.env.Pool + "/no-such-image does not exist"},
		{URL{Pool: c.env.Pool, Image: name, Snapshot: "no-such-snap"}, "has no snapshot \"no-such-snap\""},
	} {
		_, err := c.conn.OpenSnapshot(tc.u)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("OpenSnapshot(%s): %v, want %q", tc.u, err, tc.want)
		}
		_, err = c.conn.Backup(ctx, repo, tc.u, BackupOptions{Volume: "v"})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Backup(%s): %v, want %q", tc.u, err, tc.want)
		}
	}
	// A backup that fails (bad label) leaves no snapshot behind.
	_, err := c.conn.Backup(ctx, repo, URL{Pool: c.env.Pool, Image: name}, BackupOptions{Volume: "v", Labels: map[string]string{"bad key": "x"}})
	if err == nil {
		t.Fatal("backup with a bad label succeeded")
	}
	if snaps := c.snapshots(t, img); len(snaps) != 0 {
		t.Errorf("a failed backup left snapshots %v", snaps)
	}
	// An unreachable cluster: a config whose monitor does not answer.
	conf := filepath.Join(t.TempDir(), "ceph.conf")
	if err := os.WriteFile(conf, []byte("[global]\nmon_host = 127.0.0.1:9\nkeyring = /dev/null\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Connect(ConnConfig{Conf: conf, Timeout: 3 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "connecting to the cluster") || !strings.Contains(err.Error(), "127.0.0.1:9") {
		t.Errorf("Connect to an unreachable cluster: %v", err)
	}
	_, err = Connect(ConnConfig{Conf: "/nonexistent/ceph.conf"})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/ceph.conf") {
		t.Errorf("Connect with a missing conf: %v", err)
	}
}

// TestHintVerification: a base version whose content is not what its
// snapshot label claims makes the snapshot diff wrong; hint verification
// finds the difference and the backup falls back to a full read, and the
// result restores to the snapshot's content.
func TestHintVerification(t *testing.T) {
	ctx := t.Context()
	c := newCluster(t)
	repo := newRepo(t, openRepoStore(t, "mem", c))
	name, img := c.image(t, 16*mib)
	write(t, img, 0, pattern(1, bs))
	if _, err := img.CreateSnapshot("s1"); err != nil {
		t.Fatal(err)
	}
	write(t, img, bs, pattern(2, bs)) // s1 -> s2: block 1
	if _, err := img.CreateSnapshot("s2"); err != nil {
		t.Fatal(err)
	}
	write(t, img, 2*bs, pattern(3, bs)) // s2 -> s3: block 2
	if _, err := img.CreateSnapshot("s3"); err != nil {
		t.Fatal(err)
	}
	u := URL{Pool: c.env.Pool, Image: name}
	opts := BackupOptions{Volume: "v", VerifyPercent: 100}
	u.Snapshot = "s1"
	v1, err := c.conn.Backup(ctx, repo, u, opts)
	if err != nil {
		t.Fatal(err)
	}
	// Forge: the version of s1 claims to be of s2.
	var id2 string
	snaps, _ := img.GetSnapshotNames()
	for _, s := range snaps {
		if s.Name == "s2" {
			id2 = fmt.Sprint(s.Id)
		}
	}
	if _, err := repo.SetLabels(ctx, v1.Version.ID, map[string]string{LabelSnapshot: "s2", LabelSnapshotID: id2}, nil); err != nil {
		t.Fatal(err)
	}
	u.Snapshot = "s3"
	res, err := c.conn.Backup(ctx, repo, u, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Base != "" || !strings.HasPrefix(res.FullReason, "hint verification failed") {
		t.Errorf("base %q, reason %q: want a full read after the verification failure", res.Base, res.FullReason)
	}
	dest := URL{Pool: c.env.Pool, Image: name + "-restored"}
	t.Cleanup(func() { c.removeImage(t, dest.Image) })
	if err := c.conn.Restore(ctx, repo, res.Version.ID, dest, RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.export(t, dest.Spec()), c.export(t, u.Spec()+"@s3")) {
		t.Error("restore differs from the snapshot")
	}
	// Explicit snapshots are not rotated.
	if got := c.snapshots(t, img); !slices.Equal(got, []string{"s1", "s2", "s3"}) {
		t.Errorf("snapshots %v", got)
	}
}
