package blockdiff

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/zeebo/blake3"
)

func TestEncryptionOpen(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, "mem")
	r := newRepo(t, s, "right")
	img := textBytes(1, 10*testBS)
	v := backupBytes(t, r, "secret-volume", img, BackupOptions{Labels: map[string]string{"pvc": "secret-pvc"}})

	if _, err := Open(ctx, s, Options{Passphrase: []byte("wrong")}); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	if _, err := Open(ctx, s, Options{}); !errors.Is(err, ErrPassphraseRequired) {
		t.Fatalf("no passphrase: %v", err)
	}
	r2, err := Open(ctx, s, Options{Passphrase: []byte("right")})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if !bytes.Equal(restoreBytes(t, r2, v.ID), img) {
		t.Fatal("encrypted round trip differs")
	}
}

// TestEncryptionHidesPlaintext checks that no stored object or key carries
// plaintext, the volume's name and labels, or the plain hash of any block.
func TestEncryptionHidesPlaintext(t *testing.T) {
	s := openStore(t, "mem")
	r := newRepo(t, s, "pw")
	img := append(textBytes(2, 8*testBS), randBytes(3, 4*testBS)...)
	backupBytes(t, r, "secret-volume", img, BackupOptions{Labels: map[string]string{"pvc": "secret-pvc"}})
	var needles [][]byte
	for off := 0; off < len(img); off += testBS {
		blk := img[off:min(off+testBS, len(img))]
		sum := blake3.Sum256(blk)
		needles = append(needles, sum[:], []byte(hex.EncodeToString(sum[:])), blk[100:132])
	}
	needles = append(needles, []byte("secret-volume"), []byte("secret-pvc"), []byte("backup volume"))
	objs := allObjects(t, s)
	if len(objs) < 10 {
		t.Fatalf("only %d objects", len(objs))
	}
	for key, body := range objs {
		for _, n := range needles {
			if bytes.Contains(body, n) || bytes.Contains([]byte(key), n) {
				t.Fatalf("object %s contains plaintext or a plaintext hash (%.16x)", key, n)
			}
		}
	}
}

func TestUnencryptedRepoRefusesEncrypt(t *testing.T) {
	_, err := Init(context.Background(), openStore(t, "mem"), InitConfig{Encrypt: true}, Options{})
	if !errors.Is(err, ErrPassphraseRequired) {
		t.Fatalf("encrypt without passphrase: %v", err)
	}
}

func TestInitTwiceAndOpenEmpty(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, "mem")
	if _, err := Open(ctx, s, Options{}); !errors.Is(err, ErrNotRepository) {
		t.Fatalf("open empty store: %v", err)
	}
	newRepo(t, s, "")
	if _, err := Init(ctx, s, InitConfig{}, Options{}); !errors.Is(err, ErrRepositoryExists) {
		t.Fatalf("second init: %v", err)
	}
	if _, err := Init(ctx, openStore(t, "mem"), InitConfig{BlockSize: 1000}, Options{}); err == nil {
		t.Fatal("block size 1000 accepted")
	}
}
