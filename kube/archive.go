package kube

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// MaxArchiveObject is the largest YAML document ReadArchive accepts (etcd's
// default request limit is 1.5 MiB; CRDs with large schemas come close).
const MaxArchiveObject = 16 << 20

// WriteArchive writes objs to w as a tar of one YAML document per object at
// its ObjectPath, sorted by path, with fixed times, owners and modes, so
// that the same objects always give the same bytes (an unchanged namespace
// deduplicates entirely). Two objects with one path are an error.
func WriteArchive(w io.Writer, objs []*unstructured.Unstructured) error {
	type entry struct {
		path string
		body []byte
	}
	entries := make([]entry, 0, len(objs))
	for _, o := range objs {
		b, err := yaml.Marshal(o.Object)
		if err != nil {
			return fmt.Errorf("kube: archive: %s %s/%s: %w", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
		entries = append(entries, entry{ObjectPath(o), b})
	}
	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.path, b.path) })
	tw := tar.NewWriter(w)
	for i, e := range entries {
		if i > 0 && entries[i-1].path == e.path {
			return fmt.Errorf("kube: archive: two objects at %s", e.path)
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: e.path, Mode: 0o644, Size: int64(len(e.body)),
			ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("kube: archive: %s: %w", e.path, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			return fmt.Errorf("kube: archive: %s: %w", e.path, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("kube: archive: %w", err)
	}
	return nil
}

// ReadArchive reads the objects of an archive WriteArchive wrote, in its
// order. A document that is not a Kubernetes object (no apiVersion, kind or
// name), one larger than MaxArchiveObject, or a path that does not match
// its object is an error naming the path.
func ReadArchive(r io.Reader) ([]*unstructured.Unstructured, error) {
	tr := tar.NewReader(r)
	var out []*unstructured.Unstructured
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("kube: reading archive: %w", err)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		if hdr.Size > MaxArchiveObject || hdr.Size < 0 {
			return nil, fmt.Errorf("kube: archive: %s: %d bytes (at most %d)", hdr.Name, hdr.Size, MaxArchiveObject)
		}
		var buf bytes.Buffer
		if _, err := io.Copy(&buf, io.LimitReader(tr, hdr.Size)); err != nil {
			return nil, fmt.Errorf("kube: archive: %s: %w", hdr.Name, err)
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(buf.Bytes(), &u.Object); err != nil {
			return nil, fmt.Errorf("kube: archive: %s: %w", hdr.Name, err)
		}
		if u.Object == nil || u.GetAPIVersion() == "" || u.GetKind() == "" || u.GetName() == "" {
			return nil, fmt.Errorf("kube: archive: %s: not a Kubernetes object (apiVersion, kind and metadata.name required)", hdr.Name)
		}
		if p := ObjectPath(u); p != hdr.Name {
			return nil, fmt.Errorf("kube: archive: %s holds the object of %s", hdr.Name, p)
		}
		out = append(out, u)
	}
}
