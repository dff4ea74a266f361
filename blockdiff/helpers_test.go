package blockdiff

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/objstore"
)

const testBS = 64 << 10

// testKDF keeps argon2id cheap in tests; production uses DefaultKDF.
var testKDF = &KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

// openStore opens a fresh store of the named backend, skipping when the
// backend is not built into this tree.
func openStore(t testing.TB, kind string) objstore.Store {
	t.Helper()
	var url string
	switch kind {
	case "mem":
		url = "mem://" + strings.ReplaceAll(t.Name(), "/", "_") + "-" + randHex(4)
	case "file":
		url = "file://" + t.TempDir()
	default:
		t.Fatalf("unknown store kind %q", kind)
	}
	if !slices.Contains(objstore.Schemes(), kind) {
		t.Skipf("objstore has no %s:// backend in this tree", kind)
	}
	s, err := objstore.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func randHex(n int) string {
	const digits = "0123456789abcdef"
	b := make([]byte, n)
	for i := range b {
		b[i] = digits[rand.IntN(16)]
	}
	return string(b)
}

// newRepo initialises a repository with the test block size.
func newRepo(t testing.TB, s objstore.Store, pass string) *Repository {
	t.Helper()
	ic := InitConfig{BlockSize: testBS}
	opts := Options{}
	if pass != "" {
		ic.Encrypt, ic.KDF, opts.Passphrase = true, testKDF, []byte(pass)
	}
	r, err := Init(context.Background(), s, ic, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// randBytes returns n deterministic pseudo-random bytes.
func randBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 1})
	_, _ = r.Read(b)
	return b
}

// textBytes returns n bytes of compressible text-like data.
func textBytes(seed uint64, n int) []byte {
	words := []string{"backup ", "volume ", "block ", "cairn ", "restore ", "zstd ", "\n", "ceph ", "42 "}
	r := rand.New(rand.NewPCG(seed, 7))
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[r.IntN(len(words))])
	}
	return b.Bytes()[:n]
}

// writeFile writes data to a new file in dir and returns its path.
func writeFile(t testing.TB, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// backupBytes backs up data as a new version of volume.
func backupBytes(t testing.TB, r *Repository, volume string, data []byte, opts BackupOptions) *Version {
	t.Helper()
	opts.Volume = volume
	v, err := r.Backup(context.Background(), NewSource(bytes.NewReader(data), int64(len(data))), opts)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// restoreBytes restores version id to a new file and returns its content.
func restoreBytes(t testing.TB, r *Repository, id string) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), "restored")
	if err := r.RestoreFile(context.Background(), id, p, RestoreFileOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// allObjects returns every stored object's key and body.
func allObjects(t testing.TB, s objstore.Store) map[string][]byte {
	t.Helper()
	ctx := context.Background()
	out := map[string][]byte{}
	for info, err := range s.List(ctx, "") {
		if err != nil {
			t.Fatal(err)
		}
		rc, err := s.Get(ctx, info.Key, 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		_, err = b.ReadFrom(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		out[info.Key] = b.Bytes()
	}
	return out
}

// countPrefix counts stored objects under prefix.
func countPrefix(t testing.TB, s objstore.Store, prefix string) int {
	t.Helper()
	n := 0
	for _, err := range s.List(context.Background(), prefix) {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	return n
}

func readFile(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
