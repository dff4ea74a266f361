//go:build !ceph

package main

import (
	"context"
	"errors"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/kube"
)

// errNoCeph is what --volumes data says in a build without the ceph tag.
var errNoCeph = errors.New("built without Ceph support: rebuild with -tags 'ceph pacific'")

func checkSnapshotPrefix(string) error { return nil }

// cephBuilt says whether this build has the ceph tag.
const cephBuilt = false

func (a *app) backupData(context.Context, *blockdiff.Repository, []kube.Volume, *backupOptions) ([]volumeRecord, error) {
	return nil, errNoCeph
}

func (vd *volumeData) restoreImage(context.Context, volumeRecord, *rbdImageJSON) error {
	return errNoCeph
}
