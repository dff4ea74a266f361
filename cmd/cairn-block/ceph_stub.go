//go:build !ceph

package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// errNoCeph is what the Ceph commands say in a build without the ceph tag.
var errNoCeph = errors.New("built without Ceph support: rebuild with -tags 'ceph pacific'")

func (a *app) backupRBD(*cobra.Command, *cephFlags, string, string) error { return errNoCeph }

func (a *app) restoreRBD(*cobra.Command, *cephFlags, string, string) error { return errNoCeph }

func (a *app) backupAll(*cobra.Command, *backupAllOptions) error { return errNoCeph }
