package blockdiff

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/objstore"
)

// Issue 19, case 1: someone with write access to the store (not the
// passphrase) edits config. A client that holds the passphrase must never
// write plaintext, and any change to the security parameters is refused as
// tampering.

// getConfigMap reads the config object as a generic JSON map.
func getConfigMap(t *testing.T, s objstore.Store) map[string]any {
	t.Helper()
	body := allObjects(t, s)[configKey]
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// putConfigMap writes a config edited as a generic JSON map, as an attacker
// with a text editor would.
func putConfigMap(t *testing.T, s objstore.Store, m map[string]any) {
	t.Helper()
	body, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(context.Background(), configKey, bytes.NewReader(body), int64(len(body))); err != nil {
		t.Fatal(err)
	}
}

// tamperStores are the stores the tampering tests run on.
func tamperStores(t *testing.T, fn func(t *testing.T, s func() objstore.Store)) {
	t.Run("mem", func(t *testing.T) { fn(t, func() objstore.Store { return openStore(t, "mem") }) })
	t.Run("file", func(t *testing.T) { fn(t, func() objstore.Store { return openStore(t, "file") }) })
	t.Run("s3", func(t *testing.T) { fn(t, func() objstore.Store { return s3Store(t) }) })
}

// TestDowngradeToPlaintextRefused is the attack: encryption removed
// from config and index/ deleted; a backup with the passphrase must refuse
// rather than store the volume in plaintext.
func TestDowngradeToPlaintextRefused(t *testing.T) {
	tamperStores(t, func(t *testing.T, store func() objstore.Store) {
		ctx := context.Background()
		s := store()
		r := newRepo(t, s, "pw")
		backupBytes(t, r, "vol", randBytes(1, 4*testBS), BackupOptions{})
		for info, err := range s.List(ctx, "index/") {
			if err != nil {
				t.Fatal(err)
			}
			_ = s.Delete(ctx, info.Key)
		}
		orig := getConfigMap(t, s)
		for _, keepMAC := range []bool{false, true} {
			m := map[string]any{}
			for k, v := range orig {
				m[k] = v
			}
			delete(m, "encryption")
			if !keepMAC {
				delete(m, "mac")
			}
			putConfigMap(t, s, m)
			_, err := Open(ctx, s, Options{Passphrase: []byte("pw")})
			if err == nil {
				t.Fatalf("keepMAC=%v: an encrypted repository with encryption removed opened with the passphrase", keepMAC)
			}
			if !strings.Contains(err.Error(), "tampered with") {
				t.Fatalf("keepMAC=%v: error does not say tampered: %v", keepMAC, err)
			}
			if !keepMAC && !errors.Is(err, ErrNotEncrypted) {
				t.Fatalf("error is not ErrNotEncrypted: %v", err)
			}
			if keepMAC && !errors.Is(err, ErrTampered) {
				t.Fatalf("error is not ErrTampered: %v", err)
			}
		}
		// Nothing was written in plaintext.
		for key, body := range allObjects(t, s) {
			if strings.HasPrefix(key, "data/") || strings.HasPrefix(key, "versions/") {
				if body[0]&flagAESGCM == 0 {
					t.Fatalf("%s is not encrypted", key)
				}
			}
		}
	})
}

// TestPassphraseOnPlainRepoRefused: a client that holds a passphrase does not
// write to an unencrypted repository either.
func TestPassphraseOnPlainRepoRefused(t *testing.T) {
	s := openStore(t, "mem")
	newRepo(t, s, "")
	if _, err := Open(context.Background(), s, Options{Passphrase: []byte("pw")}); !errors.Is(err, ErrNotEncrypted) {
		t.Fatalf("passphrase on an unencrypted repository: %v", err)
	}
	r, err := Open(context.Background(), s, Options{})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
}

// TestConfigTamperRefused changes each security parameter of an encrypted
// config; each change is refused as tampering.
func TestConfigTamperRefused(t *testing.T) {
	edits := map[string]func(m map[string]any){
		"chunker avg":       func(m map[string]any) { m["chunker"].(map[string]any)["avg"] = 1 << 19 },
		"chunker min":       func(m map[string]any) { m["chunker"].(map[string]any)["min"] = 4096 },
		"chunker algorithm": func(m map[string]any) { m["chunker"].(map[string]any)["algorithm"] = "jc" },
		"block size":        func(m map[string]any) { m["block_size"] = 1 << 20 },
		"version 1":         func(m map[string]any) { m["version"] = 1; delete(m, "mac") },
		"mac removed":       func(m map[string]any) { delete(m, "mac") },
		"hash":              func(m map[string]any) { m["hash"] = "sha256" },
		"compression":       func(m map[string]any) { m["compression"] = "none" },
		"version 99":        func(m map[string]any) { m["version"] = 99 },
		"cipher":            func(m map[string]any) { m["encryption"].(map[string]any)["cipher"] = "aes-128-gcm" },
		"kdf":               func(m map[string]any) { m["encryption"].(map[string]any)["kdf"] = "scrypt" },
		"mac flipped": func(m map[string]any) {
			m["mac"] = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
		},
	}
	tamperStores(t, func(t *testing.T, store func() objstore.Store) {
		ctx := context.Background()
		s := store()
		newRepo(t, s, "pw")
		orig := allObjects(t, s)[configKey]
		for name, edit := range edits {
			var m map[string]any
			_ = json.Unmarshal(orig, &m)
			edit(m)
			putConfigMap(t, s, m)
			_, err := Open(ctx, s, Options{Passphrase: []byte("pw")})
			if !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), "tampered with") {
				t.Errorf("%s: %v", name, err)
			}
		}
		// The original still opens.
		if err := s.Put(ctx, configKey, bytes.NewReader(orig), int64(len(orig))); err != nil {
			t.Fatal(err)
		}
		r, err := Open(ctx, s, Options{Passphrase: []byte("pw")})
		if err != nil {
			t.Fatal(err)
		}
		r.Close()
	})
}

// legacyConfig rewrites an encrypted repository's config as format version 1
// wrote it: no MAC, the master key wrapped with the version-1 additional data.
func legacyConfig(t *testing.T, s objstore.Store, pass string) {
	t.Helper()
	ctx := context.Background()
	cfg, err := readConfig(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	master, _, err := unwrapMasterKey(cfg, []byte(pass))
	if err != nil {
		t.Fatal(err)
	}
	aead, err := keyWrapAEAD([]byte(pass), cfg.Encryption)
	if err != nil {
		t.Fatal(err)
	}
	w := cfg.Encryption.WrappedKey
	cfg.Encryption.WrappedKey = aead.Seal(w[:nonceSize:nonceSize], w[:nonceSize], master, wrapAAD(cfg.ID, 1))
	cfg.Version, cfg.MAC = 1, nil
	body, _ := json.Marshal(cfg)
	if err := s.Put(ctx, configKey, bytes.NewReader(body), int64(len(body))); err != nil {
		t.Fatal(err)
	}
}

// TestLegacyConfigUpgraded: a version-1 encrypted repository opens; its
// first backup adds the MAC (version 2), after which stripping the MAC is
// refused. Before the upgrade, parameter changes are a documented gap.
func TestLegacyConfigUpgraded(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, "file")
	r0 := newRepo(t, s, "pw")
	img := randBytes(2, 3*testBS)
	v1 := backupBytes(t, r0, "vol", img, BackupOptions{})
	legacyConfig(t, s, "pw")
	before := getConfigMap(t, s)
	if before["version"].(float64) != 1 || before["mac"] != nil {
		t.Fatalf("legacy config: %v", before)
	}
	r := openRepo(t, s, Options{Passphrase: []byte("pw")})
	if !bytes.Equal(restoreBytes(t, r, v1.ID), img) {
		t.Fatal("legacy repository restores wrong bytes")
	}
	if m := getConfigMap(t, s); m["version"].(float64) != 1 {
		t.Fatal("a restore upgraded the config")
	}
	backupBytes(t, r, "vol", img, BackupOptions{})
	after := getConfigMap(t, s)
	if after["version"].(float64) != 2 || after["mac"] == nil {
		t.Fatalf("config not upgraded by a backup: %v", after)
	}
	r2 := openRepo(t, s, Options{Passphrase: []byte("pw")})
	if !bytes.Equal(restoreBytes(t, r2, v1.ID), img) {
		t.Fatal("upgraded repository restores wrong bytes")
	}
	// Stripping the MAC and claiming version 1 again is refused: the
	// wrapped key says version 2.
	delete(after, "mac")
	after["version"] = 1
	putConfigMap(t, s, after)
	if _, err := Open(ctx, s, Options{Passphrase: []byte("pw")}); !errors.Is(err, ErrTampered) {
		t.Fatalf("stripped MAC: %v", err)
	}
}

// TestInitWithPassphraseRefusesPlaintext: a passphrase without encryption is
// refused at init too (the repository would be plaintext, and the client
// could not open it afterwards).
func TestInitWithPassphraseRefusesPlaintext(t *testing.T) {
	s := openStore(t, "mem")
	if _, err := Init(context.Background(), s, InitConfig{}, Options{Passphrase: []byte("pw")}); err == nil ||
		!strings.Contains(err.Error(), "unencrypted") {
		t.Fatalf("init with a passphrase, no encryption: %v", err)
	}
	if n := countPrefix(t, s, ""); n != 0 {
		t.Fatalf("%d objects written", n)
	}
}
