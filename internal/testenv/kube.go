package testenv

import (
	"os"
	"strings"
	"testing"
)

// KubeEnv is the kube-apiserver (with etcd) of the test environment, started
// by `scripts/testenv up kube`. RBAC is enforced and no controllers run:
// tests create PVs and PVCs and set their status themselves, and use
// namespaces and PV names of their own (the server is shared by every test
// package of a run). Kubeconfig authenticates as an admin (system:masters).
type KubeEnv struct {
	Kubeconfig string // path of the admin kubeconfig
	APIServer  string // https://127.0.0.1:PORT
}

// Kube returns the API server of the test environment, or skips/fails the
// test. It reads KUBE_TEST_KUBECONFIG, never KUBECONFIG, so that a
// developer's own cluster is never taken for the test server, and checks
// that the kubeconfig names KUBE_TEST_APISERVER.
func Kube(t testing.TB) KubeEnv {
	t.Helper()
	v := Require(t, "kube-apiserver", "KUBE_TEST_KUBECONFIG", "KUBE_TEST_APISERVER")
	b, err := os.ReadFile(v[0])
	if err != nil {
		t.Fatalf("kube-apiserver: KUBE_TEST_KUBECONFIG: %v (stale env file? run `scripts/testenv up kube`)", err)
	}
	if !strings.Contains(string(b), "server: "+v[1]+"\n") {
		t.Fatalf("kube-apiserver: %s does not name KUBE_TEST_APISERVER %s", v[0], v[1])
	}
	return KubeEnv{Kubeconfig: v[0], APIServer: v[1]}
}
