package kube

import (
	"archive/tar"
	"bytes"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func obj(apiVersion, kind, ns, name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": apiVersion, "kind": kind,
		"metadata": map[string]any{"name": name}}}
	if ns != "" {
		u.SetNamespace(ns)
	}
	return u
}

func TestArchiveRoundTripAndOrder(t *testing.T) {
	objs := []*unstructured.Unstructured{
		obj("apps/v1", "Deployment", "g", "web"), obj("v1", "Namespace", "", "g"), obj("v1", "Secret", "g", "s"),
		obj("cairn-test.io/v1", "Widget", "g", "w/x%y"), obj("v1", "PersistentVolumeClaim", "g", "data"),
		obj("apiextensions.k8s.io/v1", "CustomResourceDefinition", "", "widgets.cairn-test.io"),
	}
	var a, b bytes.Buffer
	if err := WriteArchive(&a, objs); err != nil {
		t.Fatal(err)
	}
	// any input order gives the same bytes
	rev := []*unstructured.Unstructured{objs[5], objs[4], objs[3], objs[2], objs[1], objs[0]}
	if err := WriteArchive(&b, rev); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("the archive depends on the order of the objects")
	}
	got, err := ReadArchive(bytes.NewReader(a.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, o := range got {
		paths = append(paths, ObjectPath(o))
	}
	want := "apiextensions.k8s.io/v1/CustomResourceDefinition/widgets.cairn-test.io.yaml apps/v1/Deployment/web.yaml " +
		"cairn-test.io/v1/Widget/w%2Fx%25y.yaml core/v1/Namespace/g.yaml core/v1/PersistentVolumeClaim/data.yaml core/v1/Secret/s.yaml"
	if strings.Join(paths, " ") != want {
		t.Errorf("paths %v", paths)
	}
	OrderForRestore(got)
	var kinds []string
	for _, o := range got {
		kinds = append(kinds, o.GetKind())
	}
	if strings.Join(kinds, " ") != "Namespace CustomResourceDefinition Secret PersistentVolumeClaim Deployment Widget" {
		t.Errorf("restore order %v", kinds)
	}
	if err := WriteArchive(&b, []*unstructured.Unstructured{objs[0], objs[0]}); err == nil || !strings.Contains(err.Error(), "two objects") {
		t.Errorf("duplicate: %v", err)
	}
}

func TestReadArchiveBadInput(t *testing.T) {
	for name, entries := range map[string]map[string]string{
		"not yaml":       {"core/v1/ConfigMap/x.yaml": "{{{"},
		"no kind":        {"core/v1/ConfigMap/x.yaml": "apiVersion: v1\nmetadata: {name: x}\n"},
		"wrong path":     {"core/v1/ConfigMap/y.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"},
		"a list":         {"core/v1/ConfigMap/x.yaml": "- a\n- b\n"},
		"bad metadata":   {"core/v1/ConfigMap/x.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: 7\n"},
		"not an archive": nil,
	} {
		var buf bytes.Buffer
		if entries == nil {
			buf.WriteString(strings.Repeat("garbage ", 100))
		} else {
			tw := tar.NewWriter(&buf)
			for p, body := range entries {
				_ = tw.WriteHeader(&tar.Header{Name: p, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
				_, _ = tw.Write([]byte(body))
			}
			_ = tw.Close()
		}
		if _, err := ReadArchive(&buf); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func FuzzReadArchive(f *testing.F) {
	var buf bytes.Buffer
	_ = WriteArchive(&buf, []*unstructured.Unstructured{obj("v1", "ConfigMap", "g", "x"), obj("apps/v1", "Deployment", "g", "web")})
	f.Add(buf.Bytes())
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, b []byte) {
		objs, err := ReadArchive(bytes.NewReader(b))
		if err != nil {
			return
		}
		var out bytes.Buffer
		if err := WriteArchive(&out, objs); err != nil {
			return // two entries at one path
		}
		again, err := ReadArchive(&out)
		if err != nil || len(again) != len(objs) {
			t.Fatalf("re-read: %v (%d of %d)", err, len(again), len(objs))
		}
	})
}

func TestKindFilter(t *testing.T) {
	deploy := kindNames{group: "apps", kind: "Deployment", resource: "deployments", singular: "deployment", short: []string{"deploy"}}
	for _, c := range []struct {
		f    KindFilter
		want bool
	}{
		{KindFilter{}, true},
		{KindFilter{Include: []string{"deployments"}}, true},
		{KindFilter{Include: []string{"Deployment.apps"}}, true},
		{KindFilter{Include: []string{"deploy"}}, true},
		{KindFilter{Include: []string{"deployments.extensions"}}, false},
		{KindFilter{Include: []string{"configmaps"}}, false},
		{KindFilter{Include: []string{"*"}, Exclude: []string{"deployments.apps"}}, false},
		{KindFilter{Exclude: []string{"pods"}}, true},
	} {
		if got := c.f.allows(deploy); got != c.want {
			t.Errorf("%+v: %v", c.f, got)
		}
	}
	if !(KindFilter{Include: []string{"PVC", "persistentvolumeclaims"}}).Allows(schema.GroupKind{Kind: "PersistentVolumeClaim"}, "persistentvolumeclaims") {
		t.Error("Allows by resource")
	}
}
