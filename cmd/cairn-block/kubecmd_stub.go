//go:build !ceph

package main

import (
	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/kube"
)

func checkSnapshotPrefix(string) error { return nil }

func (a *app) backupAllKube(*cobra.Command, *backupAllOptions, kube.Selector) error { return errNoCeph }

func (a *app) restorePVC(*cobra.Command, *restorePVCOptions, string) error { return errNoCeph }
