package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/internal/cli"
	"github.com/cairn-backup/cairn/internal/kubetest"
	"github.com/cairn-backup/cairn/kube"
)

// tcli runs cairn-kube in-process against a repository folder of the test
// and the test API server.
type tcli struct {
	t          *testing.T
	env        map[string]string
	kubeconfig string
}

func newCLI(t *testing.T, kenv *kubetest.Env, encrypted bool) *tcli {
	c := &tcli{t: t, env: map[string]string{"CAIRN_REPO": filepath.Join(t.TempDir(), "repo")}, kubeconfig: kenv.Kubeconfig}
	args := []string{"init"}
	if encrypted {
		c.env["CAIRN_PASSWORD"] = "correct horse"
		args = append(args, "--encrypt")
	}
	c.ok(args...)
	return c
}

// run returns the exit code, stdout and stderr of one command line.
func (c *tcli) run(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(context.Background(), append([]string{"--kubeconfig", c.kubeconfig}, args...),
		cli.IO{In: strings.NewReader(""), Out: &out, Err: &errb, Getenv: func(k string) string { return c.env[k] }})
	return code, out.String(), errb.String()
}

// ok runs a command that must succeed and returns its stdout.
func (c *tcli) ok(args ...string) string {
	c.t.Helper()
	code, out, errs := c.run(args...)
	if code != 0 {
		c.t.Fatalf("%v: exit %d\n%s\n%s", args, code, out, errs)
	}
	return out
}

// backup runs backup --json, wants exit code want, and decodes the summary.
func (c *tcli) backup(want int, args ...string) backupJSON {
	c.t.Helper()
	code, out, errs := c.run(append([]string{"backup", "--json"}, args...)...)
	if code != want {
		c.t.Fatalf("backup %v: exit %d, want %d\n%s\n%s", args, code, want, out, errs)
	}
	var s backupJSON
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		c.t.Fatalf("backup --json: %v\n%s", err, out)
	}
	return s
}

// restore runs restore --json, wants exit code want, and decodes the result.
func (c *tcli) restore(want int, args ...string) restoreJSON {
	c.t.Helper()
	code, out, errs := c.run(append([]string{"restore", "--json"}, args...)...)
	if code != want {
		c.t.Fatalf("restore %v: exit %d, want %d\n%s\n%s", args, code, want, out, errs)
	}
	var s restoreJSON
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		c.t.Fatalf("restore --json: %v\n%s", err, out)
	}
	return s
}

// archive returns the objects of an objects version.
func (c *tcli) archive(id string) map[string]*unstructured.Unstructured {
	c.t.Helper()
	var out, errb bytes.Buffer
	a := &app{}
	a.IO = cli.IO{In: strings.NewReader(""), Out: &out, Err: &errb, Getenv: func(k string) string { return c.env[k] }}
	ids := map[string]*unstructured.Unstructured{}
	a.rootCmd() // the flags' defaults
	require.NoError(c.t, a.Setup())
	ctx := context.Background()
	require.NoError(c.t, a.WithRepo(ctx, func(r *blockdiff.Repository) error {
		var buf bytes.Buffer
		if err := r.RestoreStream(ctx, id, &buf, blockdiff.StreamRestoreOptions{}); err != nil {
			return err
		}
		objs, err := kube.ReadArchive(&buf)
		for _, o := range objs {
			ids[kube.ObjectPath(o)] = o
		}
		return err
	}))
	return ids
}

// normalized is an object's YAML with what a restore changes on purpose
// (the namespace's name, a Service's new IP, a PVC's new volume) taken out.
func normalized(t *testing.T, o *unstructured.Unstructured, ns string) string {
	t.Helper()
	o = o.DeepCopy()
	switch o.GetKind() {
	case "Service":
		unstructured.RemoveNestedField(o.Object, "spec", "clusterIP")
		unstructured.RemoveNestedField(o.Object, "spec", "clusterIPs")
	case "PersistentVolumeClaim":
		unstructured.RemoveNestedField(o.Object, "spec", "volumeName")
		unstructured.RemoveNestedField(o.Object, "spec", "dataSource")
		unstructured.RemoveNestedField(o.Object, "spec", "dataSourceRef")
	}
	b, err := yaml.Marshal(o.Object)
	require.NoError(t, err)
	return strings.ReplaceAll(string(b), ns, "NS")
}

// compareNamespace exports namespace got from the server and compares its
// objects with the backed-up ones of namespace ns (by path): every object
// that a restore creates must come back as it was.
func compareNamespace(t *testing.T, kc *kube.Client, backedUp map[string]*unstructured.Unstructured, ns, got string) {
	t.Helper()
	ex, err := kc.Export(context.Background(), kube.ExportOptions{Namespace: got})
	require.NoError(t, err)
	now := map[string]*unstructured.Unstructured{}
	for _, o := range ex.Objects {
		now[kube.ObjectPath(o)] = o
	}
	n := 0
	for p, o := range backedUp {
		if o.GetNamespace() == "" || o.GetOwnerReferences() != nil || o.GetKind() == "Endpoints" || o.GetKind() == recordKind ||
			strings.HasPrefix(p, kube.SnapshotGroup) {
			continue
		}
		n++
		if now[p] == nil {
			t.Errorf("restored namespace %s lacks %s", got, p)
			continue
		}
		if w, g := normalized(t, o, ns), normalized(t, now[p], got); w != g {
			t.Errorf("restored %s differs:\n--- backed up\n%s--- restored\n%s", p, w, g)
		}
	}
	if n < 10 {
		t.Errorf("only %d objects compared", n)
	}
}

func outcomes(r restoreJSON) map[string]kube.Outcome {
	m := map[string]kube.Outcome{}
	for _, o := range r.Objects {
		m[o.Kind+"/"+o.Name] = o
	}
	return m
}

// TestBackupRestoreObjects backs up a namespace holding a Deployment (and
// the ReplicaSet it owns), a StatefulSet, a ConfigMap, a Secret, a custom
// resource, RBAC and two PVCs into an encrypted repository; a second backup
// of the unchanged namespace stores nothing new; the namespace is deleted
// and restored from the version, then restored again under a new name, and
// the objects compare each time. --include-kinds and --existing update act
// on the restore.
func TestBackupRestoreObjects(t *testing.T) {
	kenv := kubetest.New(t)
	sfx := kubetest.Suffix()
	ns := kenv.Namespace(t, "garage-"+sfx)
	kenv.Workload(t, ns, "meta", "data")
	for _, p := range []string{"meta", "data"} {
		kenv.BoundPVC(t, kubetest.PVC{Namespace: ns, Name: p, Labels: map[string]string{"backup-this-pvc": "true"},
			Source: kubetest.CephRBD("rbd", "", "csi-vol-"+p+"-"+sfx)})
	}
	c := newCLI(t, kenv, true)
	s := c.backup(0, "--namespace", ns, "--label", "flow=garage-meta-ceph")
	require.NotNil(t, s.Version)
	assert.Equal(t, "k8s/"+ns, s.Version.Volume)
	assert.Equal(t, "included", s.Secrets)
	for k, v := range map[string]string{"k8s-namespace": ns, "k8s-volumes": "none", "k8s-secrets": "included", "flow": "garage-meta-ceph"} {
		assert.Equal(t, v, s.Version.Labels[k], k)
	}
	assert.Contains(t, s.Version.Labels["k8s-server-version"], "v1.")
	objs := c.archive(s.Version.ID)
	assert.Equal(t, s.Version.Labels["k8s-objects"], itoa(len(objs)))
	for _, p := range []string{"apps/v1/Deployment/garage-web.yaml", "apps/v1/StatefulSet/garage.yaml", "core/v1/Secret/garage-rpc.yaml",
		"cairn-test.io/v1/Widget/layout.yaml", "core/v1/PersistentVolumeClaim/data.yaml", "core/v1/PersistentVolume/pv-" + ns + "-meta.yaml",
		"apiextensions.k8s.io/v1/CustomResourceDefinition/widgets.cairn-test.io.yaml"} {
		assert.Contains(t, objs, p)
	}
	again := c.backup(0, "--namespace", ns)
	assert.Less(t, again.Version.Stats.BytesWritten, int64(1024), "an unchanged namespace stores (almost) nothing new")
	out := c.ok("ls", "--namespace", ns)
	assert.Contains(t, out, s.Version.ID)
	assert.Contains(t, out, again.Version.ID)

	kc, err := kube.New(kenv.Config)
	require.NoError(t, err)
	kenv.DeleteNamespace(t, ns, kubetest.WorkloadResources...)
	for _, p := range []string{"meta", "data"} {
		kenv.DeletePV(t, "pv-"+ns+"-"+p)
	}
	r := c.restore(0, s.Version.ID)
	assert.Zero(t, r.Failed)
	oc := outcomes(r)
	assert.Equal(t, kube.ActionCreated, oc["Namespace/"+ns].Action)
	assert.Equal(t, kube.ActionCreated, oc["PersistentVolume/pv-"+ns+"-meta"].Action, "the recorded PV, absent: restored")
	assert.Equal(t, kube.ActionSkipped, oc["ReplicaSet/garage-web-5d8f"].Action)
	assert.Contains(t, oc["ReplicaSet/garage-web-5d8f"].Reason, "owned by Deployment garage-web")
	compareNamespace(t, kc, objs, ns, ns)

	// again: everything exists
	r = c.restore(0, s.Version.ID)
	assert.Zero(t, r.Created+r.Failed)

	ns2 := "copy-" + sfx
	r = c.restore(0, s.Version.ID, "--namespace-mapping", ns+":"+ns2)
	assert.Equal(t, ns2, r.TargetNamespace)
	assert.Zero(t, r.Failed)
	compareNamespace(t, kc, objs, ns, ns2)
	rb, err := kenv.Clientset.RbacV1().RoleBindings(ns2).Get(context.Background(), "garage", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, ns2, rb.Subjects[0].Namespace, "RoleBinding subjects follow the mapping")

	// --include-kinds and --existing update
	cm, err := kenv.Clientset.CoreV1().ConfigMaps(ns2).Get(context.Background(), "garage-config", metav1.GetOptions{})
	require.NoError(t, err)
	cm.Data["garage.toml"] = "changed"
	_, err = kenv.Clientset.CoreV1().ConfigMaps(ns2).Update(context.Background(), cm, metav1.UpdateOptions{})
	require.NoError(t, err)
	r = c.restore(0, s.Version.ID, "--namespace-mapping", ns+":"+ns2, "--include-kinds", "configmaps", "--existing", "update")
	assert.Equal(t, kube.ActionUpdated, outcomes(r)["ConfigMap/garage-config"].Action)
	assert.Equal(t, 1, r.Updated)
	cm, err = kenv.Clientset.CoreV1().ConfigMaps(ns2).Get(context.Background(), "garage-config", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Contains(t, cm.Data["garage.toml"], "metadata_dir")

	// usage errors
	for _, bad := range [][]string{{"backup"}, {"backup", "--namespace", ns, "--volumes", "all"},
		{"backup", "--namespace", ns, "--snapshot-class", "x"}, {"backup", "--namespace", ns, "--selector", "a in (b"},
		{"restore"}, {"restore", s.Version.ID, "--existing", "replace"}, {"restore", s.Version.ID, "--namespace-mapping", "x"},
		{"enforce"}} {
		code, _, errs := c.run(bad...)
		assert.Equal(t, cli.ExitUsage, code, "%v: %s", bad, errs)
	}
	// a missing namespace
	code, _, errs := c.run("backup", "--namespace", "nope-"+sfx)
	assert.Equal(t, cli.ExitFailure, code)
	assert.Contains(t, errs, "namespace nope-"+sfx+" does not exist")
}

// TestSecretsNeedEncryption: into a repository that is not encrypted,
// backup leaves Secrets out unless --allow-unencrypted-secrets, and no byte
// of the Secret's data reaches the store (every object of the repository
// decoded and searched); into an encrypted one Secrets go by default.
func TestSecretsNeedEncryption(t *testing.T) {
	kenv := kubetest.New(t)
	sfx := kubetest.Suffix()
	ns := kenv.Namespace(t, "secrets-"+sfx)
	kenv.Workload(t, ns)
	secret := []byte("s3cr3t-rpc-" + ns)

	plain := newCLI(t, kenv, false)
	s := plain.backup(0, "--namespace", ns)
	assert.Equal(t, "omitted", s.Secrets)
	assert.Equal(t, "omitted", s.Version.Labels["k8s-secrets"])
	assert.NotContains(t, plain.archive(s.Version.ID), "core/v1/Secret/garage-rpc.yaml")
	assert.Contains(t, plain.archive(s.Version.ID), "core/v1/ConfigMap/garage-config.yaml")
	if n := storeContains(t, plain.env["CAIRN_REPO"], secret); n > 0 {
		t.Fatalf("%d objects of the unencrypted repository hold the Secret's data", n)
	}
	s = plain.backup(0, "--namespace", ns, "--allow-unencrypted-secrets")
	assert.Equal(t, "included", s.Secrets)
	assert.Contains(t, plain.archive(s.Version.ID), "core/v1/Secret/garage-rpc.yaml")
	assert.Positive(t, storeContains(t, plain.env["CAIRN_REPO"], secret), "the search finds the Secret once it is stored")

	enc := newCLI(t, kenv, true)
	s = enc.backup(0, "--namespace", ns)
	assert.Equal(t, "included", s.Secrets)
	sec := enc.archive(s.Version.ID)["core/v1/Secret/garage-rpc.yaml"]
	require.NotNil(t, sec)
	data, _, _ := unstructured.NestedString(sec.Object, "data", "rpc-secret")
	assert.Equal(t, base64.StdEncoding.EncodeToString(secret), data)
	assert.Zero(t, storeContains(t, enc.env["CAIRN_REPO"], secret), "encrypted")
}

// storeContains counts the objects of a file repository whose payload
// (decompressed when zstd) holds b, raw or base64-encoded.
func storeContains(t *testing.T, dir string, b []byte) int {
	t.Helper()
	dec, err := zstd.NewReader(nil)
	require.NoError(t, err)
	defer dec.Close()
	b64 := []byte(base64.StdEncoding.EncodeToString(b))
	n := 0
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		raw, err := os.ReadFile(p)
		if err != nil || len(raw) == 0 {
			return err
		}
		payload := raw
		if raw[0] == 0x01 {
			if payload, err = dec.DecodeAll(raw[1:], nil); err != nil {
				payload = raw
			}
		}
		if bytes.Contains(payload, b) || bytes.Contains(payload, b64) || bytes.Contains(raw, b) || bytes.Contains(raw, b64) {
			n++
		}
		return nil
	}))
	return n
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
