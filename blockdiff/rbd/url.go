package rbd

import (
	"fmt"
	"strings"
)

// URL names an RBD image or one of its snapshots:
// rbd://POOL/IMAGE, rbd://POOL/NAMESPACE/IMAGE, each with an optional
// @SNAPSHOT.
type URL struct {
	Pool      string
	Namespace string // RBD namespace inside the pool; "" for the default
	Image     string
	Snapshot  string // "" when the URL names the image itself
}

// ParseURL parses an rbd:// URL. Names may hold any printable bytes but
// "/" (and "@" in pool, namespace and image names), as Ceph allows.
func ParseURL(s string) (URL, error) {
	bad := func(why string) (URL, error) {
		return URL{}, fmt.Errorf("rbd: URL %q: %s (want rbd://POOL/IMAGE[@SNAPSHOT] or rbd://POOL/NAMESPACE/IMAGE[@SNAPSHOT])", s, why)
	}
	rest, ok := strings.CutPrefix(s, "rbd://")
	if !ok {
		return bad("scheme is not rbd://")
	}
	if strings.ContainsFunc(rest, func(c rune) bool { return c < 0x20 || c == 0x7f }) {
		return bad("control character")
	}
	path, snap, hasSnap := strings.Cut(rest, "@")
	if hasSnap && (snap == "" || strings.Contains(snap, "/")) {
		return bad("bad snapshot name")
	}
	parts := strings.Split(path, "/")
	var u URL
	switch len(parts) {
	case 2:
		u = URL{Pool: parts[0], Image: parts[1]}
	case 3:
		u = URL{Pool: parts[0], Namespace: parts[1], Image: parts[2]}
		if u.Namespace == "" {
			return bad("empty namespace")
		}
	default:
		return bad("not POOL/IMAGE")
	}
	if u.Pool == "" || u.Image == "" {
		return bad("empty pool or image name")
	}
	for _, n := range []string{u.Pool, u.Namespace, u.Image, snap} {
		if len(n) > 4096 {
			return bad("name too long")
		}
	}
	u.Snapshot = snap
	return u, nil
}

// Spec returns the image as the rbd command names it: POOL/IMAGE or
// POOL/NAMESPACE/IMAGE, without the snapshot.
func (u URL) Spec() string {
	if u.Namespace != "" {
		return u.Pool + "/" + u.Namespace + "/" + u.Image
	}
	return u.Pool + "/" + u.Image
}

// String returns the URL in the form ParseURL accepts.
func (u URL) String() string {
	s := "rbd://" + u.Spec()
	if u.Snapshot != "" {
		s += "@" + u.Snapshot
	}
	return s
}
