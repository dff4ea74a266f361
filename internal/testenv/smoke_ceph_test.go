//go:build ceph

package testenv_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/ceph/go-ceph/rados"
	"github.com/ceph/go-ceph/rbd"

	"github.com/cairn-backup/cairn/internal/testenv"
)

// TestSmokeRBDDiff writes to an RBD image between two snapshots and checks
// that go-ceph's diff-iterate reports the changed extents (needs the build
// tags `ceph pacific` for Debian's librbd 16.2).
func TestSmokeRBDDiff(t *testing.T) {
	env := testenv.Ceph(t)
	conn, err := rados.NewConn()
	if err != nil {
		t.Fatalf("rados.NewConn: %v", err)
	}
	if err := conn.ReadConfigFile(env.Conf); err != nil {
		t.Fatalf("reading %s: %v", env.Conf, err)
	}
	for k, v := range map[string]string{"rados_osd_op_timeout": "30", "rados_mon_op_timeout": "30"} {
		if err := conn.SetConfigOption(k, v); err != nil {
			t.Fatalf("SetConfigOption %s: %v", k, err)
		}
	}
	if err := conn.Connect(); err != nil {
		t.Fatalf("connecting to the cluster of %s: %v", env.Conf, err)
	}
	t.Cleanup(conn.Shutdown)
	ioctx, err := conn.OpenIOContext(env.Pool)
	if err != nil {
		t.Fatalf("OpenIOContext %s: %v", env.Pool, err)
	}
	t.Cleanup(ioctx.Destroy)

	const size = 32 << 20
	name := fmt.Sprintf("smoke-%d", time.Now().UnixNano())
	opts := rbd.NewRbdImageOptions()
	defer opts.Destroy()
	if err := rbd.CreateImage(ioctx, name, size, opts); err != nil {
		t.Fatalf("CreateImage: %v", err)
	}
	img, err := rbd.OpenImage(ioctx, name, rbd.NoSnapshot)
	if err != nil {
		t.Fatalf("OpenImage: %v", err)
	}
	t.Cleanup(func() {
		if snaps, err := img.GetSnapshotNames(); err == nil {
			for _, s := range snaps {
				if err := img.GetSnapshot(s.Name).Remove(); err != nil {
					t.Errorf("removing snapshot %s: %v", s.Name, err)
				}
			}
		}
		if err := img.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := rbd.RemoveImage(ioctx, name); err != nil {
			t.Errorf("RemoveImage: %v", err)
		}
	})
	write := func(off int64, n int, b byte) {
		t.Helper()
		if _, err := img.WriteAt(bytes.Repeat([]byte{b}, n), off); err != nil {
			t.Fatalf("WriteAt %d: %v", off, err)
		}
	}
	write(0, 1<<20, 'a')
	if _, err := img.CreateSnapshot("s1"); err != nil {
		t.Fatalf("CreateSnapshot s1: %v", err)
	}
	write(4096, 4096, 'c')   // inside an object that existed at s1
	write(20<<20, 8192, 'd') // a new object
	if _, err := img.CreateSnapshot("s2"); err != nil {
		t.Fatalf("CreateSnapshot s2: %v", err)
	}

	snap, err := rbd.OpenImageReadOnly(ioctx, name, "s2")
	if err != nil {
		t.Fatalf("OpenImageReadOnly s2: %v", err)
	}
	defer snap.Close()
	type extent struct{ off, len uint64 }
	var got []extent
	err = snap.DiffIterate(rbd.DiffIterateConfig{SnapName: "s1", Offset: 0, Length: size,
		Callback: func(o, l uint64, _ int, _ interface{}) int { got = append(got, extent{o, l}); return 0 }})
	if err != nil {
		t.Fatalf("DiffIterate s1..s2: %v", err)
	}
	t.Logf("extents s1..s2: %+v", got)
	covered := func(off uint64) bool {
		for _, e := range got {
			if off >= e.off && off < e.off+e.len {
				return true
			}
		}
		return false
	}
	for _, off := range []uint64{4096, 20 << 20} {
		if !covered(off) {
			t.Errorf("the diff s1..s2 misses the write at %d: %+v", off, got)
		}
	}
	if covered(2 << 20) {
		t.Errorf("the diff s1..s2 reports unchanged offset %d: %+v", 2<<20, got)
	}
	buf := make([]byte, 4096)
	if _, err := snap.ReadAt(buf, 4096); err != nil || buf[0] != 'c' {
		t.Fatalf("ReadAt 4096 of s2: %v, %q", err, buf[0])
	}
}
