// Package zfs is cairn's typed adapter over the OpenZFS command line tools.
//
// It covers what a zrepl-style replication engine needs: listing filesystems,
// snapshots and bookmarks with their guid, createtxg and creation time;
// snapshot, bookmark, hold/release/holds and destroy; send (full, incremental
// from a snapshot or bookmark, resume with -t, raw -w) as a stream; resumable
// receive (-s -u) from a stream, with placeholders for missing parents; and
// receive_resume_token.
//
// go-zfs/v3 runs the commands it covers (creating filesystems, snapshots,
// setting properties); the rest is a small wrapper over the `zfs` binary.
// Every name is validated before any command runs, and every command error is a
// *CommandError that carries the command's stderr. No cgo: the package runs in
// static binaries.
package zfs

import (
	"fmt"
	"strings"
	"time"
)

// VersionType is the kind of a filesystem version.
type VersionType string

// The two kinds of filesystem versions.
const (
	Snapshot VersionType = "snapshot" // fs@name
	Bookmark VersionType = "bookmark" // fs#name
)

// Delimiter returns "@" for snapshots and "#" for bookmarks.
func (t VersionType) Delimiter() string {
	if t == Bookmark {
		return "#"
	}
	return "@"
}

// Version is a snapshot or bookmark of a filesystem. GUID identifies it
// across pools: a received snapshot and a bookmark made from a snapshot keep
// the GUID of the snapshot they come from.
type Version struct {
	Type       VersionType `json:"type"`
	Filesystem string      `json:"filesystem"`
	Name       string      `json:"name"` // short name, after '@' or '#'
	GUID       uint64      `json:"guid"`
	CreateTXG  uint64      `json:"createtxg"`
	Creation   time.Time   `json:"creation"`
}

// FullName returns "fs@name" or "fs#name".
func (v Version) FullName() string { return v.Filesystem + v.Type.Delimiter() + v.Name }

// RelName returns "@name" or "#name".
func (v Version) RelName() string { return v.Type.Delimiter() + v.Name }

// String returns the full name and the GUID.
func (v Version) String() string { return fmt.Sprintf("%s (guid %d)", v.FullName(), v.GUID) }

// Filesystem is a filesystem or volume with the properties replication needs.
type Filesystem struct {
	Name        string `json:"name"`
	Placeholder bool   `json:"placeholder,omitempty"`  // zrepl:placeholder=on
	ResumeToken string `json:"resume_token,omitempty"` // receive_resume_token, "" when none
	Encrypted   bool   `json:"encrypted,omitempty"`    // encryption is not off
}

// PlaceholderProperty is the user property that marks a filesystem created
// only to hold received children, as zrepl does.
const PlaceholderProperty = "zrepl:placeholder"

// ResumeInfo is what a receive_resume_token says about the interrupted send.
type ResumeInfo struct {
	Token    string `json:"token"`
	ToGUID   uint64 `json:"toguid"`
	FromGUID uint64 `json:"fromguid,omitempty"` // 0 for a full send
	ToName   string `json:"toname"`             // "fs@snap" on the sender
	Raw      bool   `json:"raw,omitempty"`
}

// CommandError is the failure of a zfs command: its arguments, the process
// error and what it wrote to stderr.
type CommandError struct {
	Args   []string
	Err    error
	Stderr string
}

// Error returns the command line, the process error and stderr.
func (e *CommandError) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	if msg == "" {
		return fmt.Sprintf("%s: %v", strings.Join(e.Args, " "), e.Err)
	}
	return fmt.Sprintf("%s: %v: %s", strings.Join(e.Args, " "), e.Err, msg)
}

// Unwrap returns the process error.
func (e *CommandError) Unwrap() error { return e.Err }

// NotExist reports whether the command failed because a dataset does not exist.
func (e *CommandError) NotExist() bool {
	return strings.Contains(e.Stderr, "does not exist") || strings.Contains(e.Stderr, "could not find any snapshots")
}
