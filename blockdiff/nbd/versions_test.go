package nbd

import (
	"bytes"
	"context"
	"errors"
	"net"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/objstore"
)

// The versions of a repository, served over the protocol: the export name is
// the version ID, reads return its bytes.
func TestVersions(t *testing.T) {
	ctx := t.Context()
	store, err := objstore.Open(ctx, "mem://")
	require.NoError(t, err)
	repo, err := blockdiff.Init(ctx, store, blockdiff.InitConfig{BlockSize: 64 << 10}, blockdiff.Options{})
	require.NoError(t, err)
	defer repo.Close()
	image := randomBytes(300000, 3)
	v, err := repo.Backup(ctx, blockdiff.NewSource(bytes.NewReader(image), int64(len(image))), blockdiff.BackupOptions{Volume: "vol"})
	require.NoError(t, err)

	exps := Versions(ctx, repo, blockdiff.ReaderOptions{CacheBlocks: 2})
	names, err := exps.List(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{v.ID}, names)
	_, err = exps.Open(ctx, "no-such-version")
	require.True(t, errors.Is(err, ErrUnknownExport), "Open of a missing version: %v", err)

	cl, size := dial(t, serve(t, exps), v.ID)
	require.Equal(t, int64(len(image)), size)
	errno, data := cl.request(cmdRead, 65000, 100000, nil) // across blocks
	require.Zero(t, errno)
	require.True(t, bytes.Equal(image[65000:165000], data), "bytes read over NBD differ")

	// ServeVersions returns nil once its context ends.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ServeVersions(sctx, l, repo, blockdiff.ReaderOptions{}, nil) }()
	cl, size = dial(t, l.Addr().String(), v.ID)
	require.Equal(t, int64(len(image)), size)
	errno, data = cl.request(cmdRead, 0, 4096, nil)
	require.Zero(t, errno)
	require.Equal(t, image[:4096], data)
	cl.c.Close()
	cancel()
	require.NoError(t, <-done)
}
