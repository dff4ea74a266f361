//go:build ceph

package ceph

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	librados "github.com/ceph/go-ceph/rados"
)

// DefaultTimeout bounds connecting to the cluster and every monitor and OSD
// operation when ConnConfig.Timeout is zero.
const DefaultTimeout = 60 * time.Second

// ConnConfig says how to reach a Ceph cluster. The zero value uses the
// standard Ceph environment: the configuration file named by CEPH_CONF (else
// /etc/ceph/ceph.conf and the other default paths), options from CEPH_ARGS
// (such as --id NAME --keyring PATH), and the client.admin identity.
// Secrets are never part of it: the key comes from the keyring file the
// configuration names.
type ConnConfig struct {
	Conf    string        // ceph.conf path; "" = CEPH_CONF or the default search path
	User    string        // client ID without "client." ("" = CEPH_ARGS --id, else admin)
	Keyring string        // keyring path overriding the configuration's
	Timeout time.Duration // connect and operation timeout; 0 = DefaultTimeout
}

// Connect opens a connection to the cluster that cfg names. Its errors say
// which configuration file and monitors were tried, so that an unreachable
// cluster or a missing keyring is obvious; they never contain a key.
func Connect(cfg ConnConfig) (*librados.Conn, error) {
	var conn *librados.Conn
	var err error
	if cfg.User != "" {
		conn, err = librados.NewConnWithUser(cfg.User)
	} else {
		conn, err = librados.NewConn()
	}
	if err != nil {
		return nil, fmt.Errorf("ceph: creating a cluster handle: %w", err)
	}
	confName := cfg.Conf
	if confName != "" {
		err = conn.ReadConfigFile(confName)
	} else {
		confName = os.Getenv("CEPH_CONF")
		if confName == "" {
			confName = "/etc/ceph/ceph.conf"
		}
		err = conn.ReadDefaultConfigFile()
	}
	if err != nil {
		conn.Shutdown()
		return nil, fmt.Errorf("ceph: reading the configuration %s (set CEPH_CONF to another file): %w", confName, err)
	}
	if err := conn.ParseDefaultConfigEnv(); err != nil { // CEPH_ARGS
		conn.Shutdown()
		return nil, fmt.Errorf("ceph: parsing CEPH_ARGS: %w", err)
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	secs := strconv.Itoa(max(1, int(timeout.Round(time.Second)/time.Second)))
	opts := [][2]string{
		{"client_mount_timeout", secs},
		{"rados_mon_op_timeout", secs},
		{"rados_osd_op_timeout", secs},
	}
	if cfg.Keyring != "" {
		opts = append(opts, [2]string{"keyring", cfg.Keyring})
	}
	for _, o := range opts {
		if err := conn.SetConfigOption(o[0], o[1]); err != nil {
			conn.Shutdown()
			return nil, fmt.Errorf("ceph: setting %s: %w", o[0], err)
		}
	}
	if err := conn.Connect(); err != nil {
		mons, _ := conn.GetConfigOption("mon_host")
		keyring, _ := conn.GetConfigOption("keyring")
		name, _ := conn.GetConfigOption("name")
		conn.Shutdown()
		hint := ""
		if errors.Is(err, librados.ErrNotFound) || strings.Contains(err.Error(), "No such file") {
			hint = " (no keyring found for the client: check the keyring option or CEPH_ARGS --keyring)"
		}
		return nil, fmt.Errorf("ceph: connecting to the cluster (conf %s, mon_host %q, as %s, keyring %s, timeout %s)%s: %w",
			confName, mons, name, keyring, timeout, hint, err)
	}
	return conn, nil
}

// OpenPool opens an I/O context on pool, with a clear error when the pool does
// not exist.
func OpenPool(conn *librados.Conn, pool string) (*librados.IOContext, error) {
	ioctx, err := conn.OpenIOContext(pool)
	if errors.Is(err, librados.ErrNotFound) {
		return nil, fmt.Errorf("ceph: pool %q does not exist: %w", pool, err)
	}
	if err != nil {
		return nil, fmt.Errorf("ceph: opening pool %q: %w", pool, err)
	}
	return ioctx, nil
}
