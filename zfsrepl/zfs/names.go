package zfs

import (
	"errors"
	"fmt"
	"strings"
)

// MaxNameLen is the longest dataset, snapshot or bookmark name OpenZFS accepts
// (ZFS_MAX_DATASET_NAME_LEN minus the terminating NUL).
const MaxNameLen = 255

// ErrInvalidName is wrapped by every name validation error.
var ErrInvalidName = errors.New("invalid ZFS name")

// NameError says which name was refused and why. It wraps ErrInvalidName.
type NameError struct {
	Name   string // the refused name, quoted with %q when printed
	Reason string
}

// Error returns the name and the reason.
func (e *NameError) Error() string {
	return fmt.Sprintf("invalid ZFS name %q: %s", e.Name, e.Reason)
}

// Unwrap returns ErrInvalidName.
func (e *NameError) Unwrap() error { return ErrInvalidName }

func nameErr(name, format string, args ...any) error {
	return &NameError{Name: name, Reason: fmt.Sprintf(format, args...)}
}

// validComponentChar reports whether c may appear in a ZFS name component
// (zfs_namecheck.c: alphanumerics, '_', '-', ':', '.' and ' ').
func validComponentChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '_' || c == '-' || c == ':' || c == '.' || c == ' '
}

// ValidateComponent checks one component of a dataset path, or the short name
// of a snapshot or bookmark (the part after '@' or '#'): not empty, not "." or
// "..", only the characters OpenZFS allows. It never panics.
func ValidateComponent(c string) error {
	switch c {
	case "":
		return nameErr(c, "empty component")
	case ".", "..":
		return nameErr(c, "component %q refers to a directory", c)
	}
	for i := 0; i < len(c); i++ {
		if !validComponentChar(c[i]) {
			return nameErr(c, "character %q at offset %d is not allowed", c[i], i)
		}
	}
	if len(c) > MaxNameLen {
		return nameErr(c, "longer than %d bytes", MaxNameLen)
	}
	return nil
}

// ValidateFilesystem checks a full dataset path such as "pool/garage/data":
// components separated by single '/', no leading or trailing '/', no '@' or
// '#', no "." or "..", no control characters, a pool name that starts with a
// letter, at most MaxNameLen bytes.
func ValidateFilesystem(name string) error {
	if err := ValidateRelativePath(name); err != nil {
		return err
	}
	c := name[0]
	if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
		return nameErr(name, "pool name must start with a letter")
	}
	return nil
}

// ValidateRelativePath checks a dataset path relative to some root, as it
// arrives from the wire: the rules of ValidateFilesystem except that the first
// component need not start with a letter. An absolute path, "..", '@', '#' and
// control characters are refused.
func ValidateRelativePath(name string) error {
	if name == "" {
		return nameErr(name, "empty")
	}
	if len(name) > MaxNameLen {
		return nameErr(name, "longer than %d bytes", MaxNameLen)
	}
	if strings.HasPrefix(name, "/") {
		return nameErr(name, "absolute path")
	}
	if i := strings.IndexAny(name, "@#"); i >= 0 {
		return nameErr(name, "%q at offset %d: a filesystem name has no snapshot or bookmark part", name[i], i)
	}
	for _, comp := range strings.Split(name, "/") {
		if err := ValidateComponent(comp); err != nil {
			var ne *NameError
			if errors.As(err, &ne) {
				return nameErr(name, "%s", ne.Reason)
			}
			return err
		}
	}
	return nil
}

// ValidateHoldTag checks a user hold tag: printable, no leading '-', at most
// 255 bytes (ZFS_MAX_DATASET_NAME_LEN - 1, as zfs hold requires).
func ValidateHoldTag(tag string) error {
	if tag == "" {
		return nameErr(tag, "empty hold tag")
	}
	if tag[0] == '-' {
		return nameErr(tag, "hold tag starts with '-'")
	}
	if len(tag) > MaxNameLen {
		return nameErr(tag, "hold tag longer than %d bytes", MaxNameLen)
	}
	for i := 0; i < len(tag); i++ {
		if !validComponentChar(tag[i]) {
			return nameErr(tag, "character %q at offset %d is not allowed in a hold tag", tag[i], i)
		}
	}
	return nil
}

// ParseVersionName splits "fs@snap" or "fs#bookmark" into its filesystem, type
// and short name, validating both parts.
func ParseVersionName(full string) (fs string, typ VersionType, name string, err error) {
	i := strings.IndexAny(full, "@#")
	if i < 0 {
		return "", "", "", nameErr(full, "neither a snapshot (@) nor a bookmark (#)")
	}
	fs, name = full[:i], full[i+1:]
	typ = Snapshot
	if full[i] == '#' {
		typ = Bookmark
	}
	if err := ValidateFilesystem(fs); err != nil {
		return "", "", "", err
	}
	if strings.ContainsAny(name, "@#/") {
		return "", "", "", nameErr(full, "short name %q contains '@', '#' or '/'", name)
	}
	if err := ValidateComponent(name); err != nil {
		return "", "", "", nameErr(full, "%v", err)
	}
	if len(full) > MaxNameLen {
		return "", "", "", nameErr(full, "longer than %d bytes", MaxNameLen)
	}
	return fs, typ, name, nil
}

// ValidateVersion checks that v names a valid snapshot or bookmark.
func ValidateVersion(v Version) error {
	if v.Type != Snapshot && v.Type != Bookmark {
		return nameErr(v.FullName(), "unknown version type %q", v.Type)
	}
	_, _, _, err := ParseVersionName(v.FullName())
	return err
}
