//go:build ceph

package ceph_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	librados "github.com/ceph/go-ceph/rados"

	"github.com/cairn-backup/cairn/internal/ceph"
	"github.com/cairn-backup/cairn/internal/testenv"
)

// Connection failures say what was tried; they need no cluster.
func TestConnectErrors(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "ceph.conf")
	if err := os.WriteFile(conf, []byte("[global]\nmon_host = 127.0.0.1:9\nkeyring = /dev/null\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := ceph.Connect(ceph.ConnConfig{Conf: conf, Timeout: 2 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "connecting to the cluster") || !strings.Contains(err.Error(), "127.0.0.1:9") {
		t.Errorf("Connect to an unreachable cluster: %v", err)
	}
	_, err = ceph.Connect(ceph.ConnConfig{Conf: "/nonexistent/ceph.conf"})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/ceph.conf") {
		t.Errorf("Connect with a missing conf: %v", err)
	}
}

// On the test cluster: a connection, a pool, and a missing pool's message.
func TestConnectCluster(t *testing.T) {
	env := testenv.Ceph(t)
	conn, err := ceph.Connect(ceph.ConnConfig{Conf: env.Conf})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Shutdown()
	ioctx, err := ceph.OpenPool(conn, env.Pool)
	if err != nil {
		t.Fatal(err)
	}
	ioctx.Destroy()
	_, err = ceph.OpenPool(conn, "cairn-no-such-pool")
	if !errors.Is(err, librados.ErrNotFound) || !strings.Contains(err.Error(), `pool "cairn-no-such-pool" does not exist`) {
		t.Errorf("OpenPool of a missing pool: %v", err)
	}
}
