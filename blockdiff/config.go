package blockdiff

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"github.com/cairn-backup/cairn/objstore"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/crypto/argon2"
	"lukechampine.com/blake3"
)

// Repository format constants (FORMAT.md).
const (
	// FormatName is the "format" field of every config object.
	FormatName = "cairn-blockdiff"
	// FormatVersion is the repository format this package writes and the
	// highest it reads. Version 2 added the config MAC of encrypted
	// repositories (FORMAT.md, "config"); version 1 repositories still open,
	// and an encrypted one is upgraded by the first backup or cleanup.
	// Version 3 frames manifests (their header is read without their
	// references) and the index; repositories of versions 1 and 2 still
	// read.
	FormatVersion = 3
	// DefaultBlockSize is the block size of a repository when Init is not told.
	DefaultBlockSize = 4 << 20
	// MinBlockSize is the smallest block size a repository may use.
	MinBlockSize = 64 << 10
	// MaxBlockSize is the largest block size a repository may use.
	MaxBlockSize = 32 << 20

	configKey     = "config"
	masterKeySize = 64 // 32 bytes AES-256 key, then 32 bytes BLAKE3 ID key
)

// KDFParams are the argon2id parameters that turn a passphrase into the key
// that wraps the master key.
type KDFParams struct {
	Time      uint32 `json:"time"`       // passes over memory
	MemoryKiB uint32 `json:"memory_kib"` // memory in KiB
	Threads   uint8  `json:"threads"`    // lanes
}

// DefaultKDF is the RFC 9106 second recommended argon2id setting (64 MiB, 3 passes).
var DefaultKDF = KDFParams{Time: 3, MemoryKiB: 64 << 10, Threads: 4}

// ChunkerParams are the content-defined chunking parameters of stream
// versions, fixed per repository so that dumps deduplicate against each other.
type ChunkerParams struct {
	Algorithm string `json:"algorithm"` // "fastcdc"
	Min       int    `json:"min"`       // smallest chunk in bytes
	Avg       int    `json:"avg"`       // target average chunk in bytes
	Max       int    `json:"max"`       // largest chunk in bytes
}

// Config is the content of the config object: what a reader needs to know
// before it can read anything else.
type Config struct {
	Format      string        `json:"format"`
	Version     int           `json:"version"`
	ID          string        `json:"id"`
	Created     time.Time     `json:"created"`
	Hash        string        `json:"hash"`
	Compression string        `json:"compression"`
	BlockSize   int           `json:"block_size"`
	Chunker     ChunkerParams `json:"chunker"`
	Encryption  *Encryption   `json:"encryption,omitempty"`
	// MAC authenticates the security parameters of an encrypted repository
	// under its master key (configMAC); absent when unencrypted.
	MAC []byte `json:"mac,omitempty"`
}

// Encryption describes how the master key is wrapped in the config object.
type Encryption struct {
	Cipher     string    `json:"cipher"` // "aes-256-gcm"
	KDF        string    `json:"kdf"`    // "argon2id"
	KDFParams  KDFParams `json:"kdf_params"`
	Salt       []byte    `json:"salt"`        // base64 in JSON
	WrappedKey []byte    `json:"wrapped_key"` // nonce || AES-256-GCM(master key), base64
}

// InitConfig chooses the fixed parameters of a new repository.
type InitConfig struct {
	BlockSize int        // 0 means DefaultBlockSize
	Encrypt   bool       // requires Options.Passphrase
	KDF       *KDFParams // nil means DefaultKDF
	// Chunker sets the content-defined chunking of stream versions; nil
	// means DefaultChunker.
	Chunker *ChunkerParams
}

// Options tune how a process uses a repository; they are not stored.
//
// Memory: a backup holds at most (3*Workers + Transfers) buffers of one block
// (about 56 MiB with 2 workers and 4 MiB blocks), plus max(4, 2*Workers) for
// blocks being looked up in the compacted index, a restore 2*Transfers; the
// rest grows only with the number of blocks (the manifest, about 50 bytes a
// block), with the objects indexed since the last compaction (the dedup set,
// about 60 bytes each) and, for the compacted index, its frame directory
// (0.06 bytes an object: 1.5 MB at 26.2M objects) and the Bloom filters of
// the packs the backup looked up (1.25 bytes an object of those packs).
type Options struct {
	Passphrase []byte       // for encrypted repositories; never logged
	Logger     *slog.Logger // nil discards logs
	Workers    int          // CPU stage parallelism (hash, compress, encrypt); 0 = GOMAXPROCS
	Transfers  int          // concurrent object uploads or downloads; 0 = 8
	// Compression is the zstd level for new objects; 0 = zstd.SpeedFastest.
	Compression zstd.EncoderLevel
	// LockTTL is how long this process's repository locks stay valid
	// without a refresh (they are refreshed every LockTTL/4); 0 =
	// DefaultLockTTL. See FORMAT.md, "Locks".
	LockTTL time.Duration
	// LockWait is how long Backup and the maintenance operations wait for
	// a conflicting lock to go away; 0 = DefaultLockWait.
	LockWait time.Duration
	// NoReadLock lets restores and version readers run without the shared
	// lock they otherwise hold, for credentials that cannot write locks/.
	// A cleanup running meanwhile may then delete what a restore still
	// needs: the restore fails; it never writes wrong bytes.
	NoReadLock bool
	// CacheDir is a local directory where the index of compacted
	// repositories (format 3) is cached between processes, under the
	// repository's ID: directories and the frames looked up, as stored
	// (encrypted when the repository is), checked on every read. "" caches
	// nothing: every backup reads the index directories from the store.
	// See DefaultCacheDir.
	CacheDir string
}

// Repository is an open blockdiff repository. It is safe for concurrent use.
type Repository struct {
	store objstore.Store
	cfg   Config
	codec *codec
	opts  Options
	log   *slog.Logger

	dedupMu     sync.Mutex
	dedup       map[ID]struct{} // objects known to exist; nil until loaded
	dedupLoaded bool
	inflight    map[ID]*flight      // uploads in progress, by ID
	dedupSegs   map[string]struct{} // index segments the dedup set holds (dedup.go)
	pending     map[ID]int          // stored by running backups, not yet in a segment
	gens        []*genDir           // compacted index generations held (dedup.go)
	refreshMu   sync.Mutex          // serializes refreshDedup
	cache       *indexCache         // nil without Options.CacheDir (indexcache.go)
	frameMem    frameMem            // frames read last (indexcache.go)

	upgradeMu     sync.Mutex
	legacyMaster  []byte      // set while a version-1 encrypted config awaits its MAC (upgradeConfig)
	legacyWrap    cipher.AEAD // the key-wrapping cipher, kept only for that upgrade
	formatVersion int         // the config's version as this process last wrote or read it (upgradeFormat); 0 = cfg.Version
}

// Init creates a repository in an empty store and returns it open. A
// passphrase without ic.Encrypt is refused: a client that holds a passphrase
// never writes plaintext (and could not open the repository afterwards).
func Init(ctx context.Context, store objstore.Store, ic InitConfig, opts Options) (*Repository, error) {
	if !ic.Encrypt && len(opts.Passphrase) > 0 {
		return nil, errors.New("blockdiff: init: a passphrase was given but encryption was not asked for: " +
			"refusing to create an unencrypted repository (encrypt it, or give no passphrase)")
	}
	cfg, master, err := newConfig(ic, opts.Passphrase)
	if err != nil {
		return nil, err
	}
	body, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("blockdiff: encode config: %w", err)
	}
	if err := createConfig(ctx, store, body); err != nil {
		return nil, err
	}
	return newRepository(store, cfg, master, opts)
}

// createConfig writes the config object unless one exists, conditionally where
// the backend can.
func createConfig(ctx context.Context, store objstore.Store, body []byte) error {
	err := store.Create(ctx, configKey, bytes.NewReader(body), int64(len(body)))
	if errors.Is(err, objstore.ErrExist) {
		return ErrRepositoryExists
	}
	if !errors.Is(err, objstore.ErrNotSupported) {
		if err != nil {
			return fmt.Errorf("blockdiff: write config: %w", err)
		}
		return nil
	}
	if _, err := store.Stat(ctx, configKey); err == nil {
		return ErrRepositoryExists
	} else if !errors.Is(err, objstore.ErrNotExist) {
		return fmt.Errorf("blockdiff: stat config: %w", err)
	}
	if err := store.Put(ctx, configKey, bytes.NewReader(body), int64(len(body))); err != nil {
		return fmt.Errorf("blockdiff: write config: %w", err)
	}
	return nil
}

// CheckBlockSize returns an error unless bs is a valid block size: a
// multiple of 4096 in MinBlockSize..MaxBlockSize.
func CheckBlockSize(bs int) error {
	if bs < MinBlockSize || bs > MaxBlockSize || bs%4096 != 0 {
		return fmt.Errorf("blockdiff: block size %d: want a multiple of 4096 in %d..%d", bs, MinBlockSize, MaxBlockSize)
	}
	return nil
}

// newConfig fills a Config and, when encrypting, makes and wraps a master key.
func newConfig(ic InitConfig, pass []byte) (Config, []byte, error) {
	bs := ic.BlockSize
	if bs == 0 {
		bs = DefaultBlockSize
	}
	if err := CheckBlockSize(bs); err != nil {
		return Config{}, nil, err
	}
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	cfg := Config{
		Format: FormatName, Version: FormatVersion, ID: hex.EncodeToString(id),
		Created: time.Now().UTC(), Hash: "blake3-256", Compression: "zstd", BlockSize: bs,
		Chunker: DefaultChunker,
	}
	if ic.Chunker != nil {
		if err := CheckChunkerParams(*ic.Chunker); err != nil {
			return Config{}, nil, err
		}
		cfg.Chunker = *ic.Chunker
	}
	if !ic.Encrypt {
		return cfg, nil, nil
	}
	if len(pass) == 0 {
		return Config{}, nil, ErrPassphraseRequired
	}
	kdf := DefaultKDF
	if ic.KDF != nil {
		kdf = *ic.KDF
	}
	master := make([]byte, masterKeySize)
	_, _ = rand.Read(master)
	salt := make([]byte, 16)
	_, _ = rand.Read(salt)
	enc := &Encryption{Cipher: "aes-256-gcm", KDF: "argon2id", KDFParams: kdf, Salt: salt}
	aead, err := keyWrapAEAD(pass, enc)
	if err != nil {
		return Config{}, nil, err
	}
	nonce := make([]byte, nonceSize)
	_, _ = rand.Read(nonce)
	enc.WrappedKey = aead.Seal(nonce, nonce, master, wrapAAD(cfg.ID, FormatVersion))
	cfg.Encryption = enc
	cfg.MAC = configMAC(cfg, master)
	return cfg, master, nil
}

// keyWrapAEAD derives the key-wrapping cipher from the passphrase.
func keyWrapAEAD(pass []byte, enc *Encryption) (cipher.AEAD, error) {
	p := enc.KDFParams
	if p.Time == 0 || p.Time > 100 || p.MemoryKiB < 8 || p.MemoryKiB > 4<<20 || p.Threads == 0 {
		return nil, fmt.Errorf("blockdiff: argon2id parameters %+v out of range: %w", p, ErrUnsupportedFormat)
	}
	kek := argon2.IDKey(pass, enc.Salt, p.Time, p.MemoryKiB, p.Threads, 32)
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, fmt.Errorf("blockdiff: aes: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("blockdiff: gcm: %w", err)
	}
	return aead, nil
}

// Open opens the repository in store, unwrapping the master key with
// opts.Passphrase when the repository is encrypted.
//
// A client that holds a passphrase never writes plaintext: a config without
// encryption opened with a passphrase is refused (ErrNotEncrypted), and the
// security parameters of an encrypted repository are checked against the
// config's MAC under the master key, so a changed config is refused with an
// error wrapping ErrTampered.
func Open(ctx context.Context, store objstore.Store, opts Options) (*Repository, error) {
	cfg, err := readConfig(ctx, store)
	if err != nil && len(opts.Passphrase) > 0 && (errors.Is(err, ErrUnsupportedFormat) || errors.Is(err, ErrCorrupt)) {
		err = tamperedConfig(ctx, store, opts.Passphrase, err)
	}
	if err != nil {
		return nil, err
	}
	var master []byte
	var legacy cipher.AEAD
	switch {
	case cfg.Encryption != nil:
		if master, legacy, err = unwrapMasterKey(cfg, opts.Passphrase); err != nil {
			return nil, err
		}
	case len(cfg.MAC) > 0:
		return nil, fmt.Errorf("blockdiff: the config carries the MAC of an encrypted repository but no encryption section (encryption was removed from it): %w", ErrTampered)
	case len(opts.Passphrase) > 0:
		return nil, ErrNotEncrypted
	}
	r, err := newRepository(store, cfg, master, opts)
	if err != nil {
		return nil, err
	}
	if legacy != nil {
		r.legacyMaster, r.legacyWrap = master, legacy
		r.log.Info("encrypted repository of format version 1: its config gets a MAC at the first backup or cleanup", "id", cfg.ID)
	}
	return r, nil
}

// tamperedConfig tells a config that was changed apart from one of a format
// this build does not know: when the passphrase unwraps the master key of
// the config as it is and its MAC does not match, someone changed a
// parameter to a value this build refuses (a cipher, hash or version), and
// the error says the repository was tampered with. Otherwise it returns
// err, the parser's.
func tamperedConfig(ctx context.Context, store objstore.Store, pass []byte, err error) error {
	rc, gerr := store.Get(ctx, configKey, 0, 1<<20)
	if gerr != nil {
		return err
	}
	body, rerr := io.ReadAll(rc)
	rc.Close()
	var cfg Config
	if rerr != nil || json.Unmarshal(body, &cfg) != nil || cfg.Encryption == nil || len(cfg.MAC) == 0 {
		return err
	}
	aead, kerr := keyWrapAEAD(pass, cfg.Encryption)
	w := cfg.Encryption.WrappedKey
	if kerr != nil || len(w) < nonceSize+tagSize {
		return err
	}
	master, oerr := aead.Open(nil, w[:nonceSize], w[nonceSize:], wrapAAD(cfg.ID, 2))
	debug.FreeOSMemory()
	if oerr != nil || len(master) != masterKeySize || subtle.ConstantTimeCompare(cfg.MAC, configMAC(cfg, master)) == 1 {
		return err
	}
	return fmt.Errorf("blockdiff: the config's security parameters do not match its MAC (%w): %w", err, ErrTampered)
}

// wrapAAD is the additional data that binds the wrapped master key to the
// repository ID and, from version 2 on, to the presence of a config MAC.
func wrapAAD(id string, version int) []byte {
	if version < 2 {
		return []byte(FormatName + " master key " + id)
	}
	return []byte(FormatName + " master key v2 " + id)
}

// canonicalConfig is the text the config MAC covers: every security
// parameter, one "name=value" line each (FORMAT.md, "config").
func canonicalConfig(cfg Config) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s config mac v1\n", FormatName)
	fmt.Fprintf(&b, "format=%s\nversion=%d\nid=%s\nhash=%s\ncompression=%s\nblock_size=%d\n",
		cfg.Format, cfg.Version, cfg.ID, cfg.Hash, cfg.Compression, cfg.BlockSize)
	c := cfg.Chunker
	fmt.Fprintf(&b, "chunker=%s,%d,%d,%d\n", c.Algorithm, c.Min, c.Avg, c.Max)
	if e := cfg.Encryption; e != nil {
		p := e.KDFParams
		fmt.Fprintf(&b, "cipher=%s\nkdf=%s\nkdf_params=%d,%d,%d\nsalt=%s\nwrapped_key=%s\n",
			e.Cipher, e.KDF, p.Time, p.MemoryKiB, p.Threads, hex.EncodeToString(e.Salt), hex.EncodeToString(e.WrappedKey))
	}
	return b.Bytes()
}

// configMAC is BLAKE3-256-keyed(MAC key, canonicalConfig(cfg)) with MAC key =
// BLAKE3-256-keyed(ID key, "cairn-blockdiff config mac key").
func configMAC(cfg Config, master []byte) []byte {
	kh := blake3.New(32, master[32:64])
	_, _ = kh.Write([]byte(FormatName + " config mac key"))
	h := blake3.New(32, kh.Sum(nil))
	_, _ = h.Write(canonicalConfig(cfg))
	return h.Sum(nil)
}

// upgradeConfig gives a version-1 encrypted repository opened by this
// process a config MAC: the master key is wrapped again with the version-2
// additional data, which tells readers a MAC is required. Backups and
// cleanup call it; it is best effort (a read-only client cannot write).
func (r *Repository) upgradeConfig(ctx context.Context) {
	r.upgradeMu.Lock()
	defer r.upgradeMu.Unlock()
	master := r.legacyMaster
	if master == nil {
		return
	}
	cfg := r.cfg // r.cfg itself stays as read: others read it unlocked
	enc := *cfg.Encryption
	nonce := make([]byte, nonceSize)
	_, _ = rand.Read(nonce)
	enc.WrappedKey = r.legacyWrap.Seal(nonce, nonce, master, wrapAAD(cfg.ID, 2))
	cfg.Encryption, cfg.Version = &enc, 2
	cfg.MAC = configMAC(cfg, master)
	body, err := json.MarshalIndent(cfg, "", "  ")
	if err == nil {
		err = r.store.Put(ctx, configKey, bytes.NewReader(body), int64(len(body)))
	}
	if err != nil {
		r.log.Warn("could not add a MAC to the version-1 config; trying again at the next backup", "err", err)
		return
	}
	r.legacyMaster, r.legacyWrap = nil, nil
	r.log.Info("config upgraded to format version 2: its security parameters are now authenticated", "id", cfg.ID)
}

// readConfig fetches and validates the config object.
func readConfig(ctx context.Context, store objstore.Store) (Config, error) {
	rc, err := store.Get(ctx, configKey, 0, -1)
	if errors.Is(err, objstore.ErrNotExist) {
		return Config{}, ErrNotRepository
	}
	if err != nil {
		return Config{}, fmt.Errorf("blockdiff: read config: %w", err)
	}
	defer rc.Close()
	body, err := io.ReadAll(io.LimitReader(rc, 1<<20))
	if err != nil {
		return Config{}, fmt.Errorf("blockdiff: read config: %w", err)
	}
	return parseConfig(body)
}

// parseConfig decodes and validates a config object's bytes.
func parseConfig(body []byte) (Config, error) {
	var cfg Config
	if err := json.Unmarshal(body, &cfg); err != nil {
		return Config{}, fmt.Errorf("blockdiff: config is not JSON: %v: %w", err, ErrCorrupt)
	}
	if cfg.Format != FormatName {
		return Config{}, fmt.Errorf("blockdiff: config format %q, want %q: %w", cfg.Format, FormatName, ErrUnsupportedFormat)
	}
	if cfg.Version < 1 || cfg.Version > FormatVersion {
		return Config{}, fmt.Errorf("blockdiff: repository format version %d, this build reads 1..%d: %w", cfg.Version, FormatVersion, ErrUnsupportedFormat)
	}
	if cfg.Hash != "blake3-256" || cfg.Compression != "zstd" {
		return Config{}, fmt.Errorf("blockdiff: hash %q / compression %q: %w", cfg.Hash, cfg.Compression, ErrUnsupportedFormat)
	}
	if cfg.BlockSize < MinBlockSize || cfg.BlockSize > MaxBlockSize {
		return Config{}, fmt.Errorf("blockdiff: block size %d out of range: %w", cfg.BlockSize, ErrCorrupt)
	}
	if e := cfg.Encryption; e != nil && (e.Cipher != "aes-256-gcm" || e.KDF != "argon2id") {
		return Config{}, fmt.Errorf("blockdiff: cipher %q / kdf %q: %w", e.Cipher, e.KDF, ErrUnsupportedFormat)
	}
	return cfg, nil
}

// unwrapMasterKey derives the wrapping key and opens the master key; GCM's
// authentication is what tells a wrong passphrase apart. A version-2 key
// (wrapAAD) requires a config whose MAC verifies; legacy reports a version-1
// key, which has none yet: then the key-wrapping cipher is returned too, for
// the upgrade.
func unwrapMasterKey(cfg Config, pass []byte) (master []byte, legacyWrap cipher.AEAD, err error) {
	if len(pass) == 0 {
		return nil, nil, ErrPassphraseRequired
	}
	aead, err := keyWrapAEAD(pass, cfg.Encryption)
	if err != nil {
		return nil, nil, err
	}
	legacy := false
	w := cfg.Encryption.WrappedKey
	if len(w) < nonceSize+tagSize {
		return nil, nil, fmt.Errorf("blockdiff: wrapped key too short: %w", ErrCorrupt)
	}
	master, err = aead.Open(nil, w[:nonceSize], w[nonceSize:], wrapAAD(cfg.ID, 2))
	if err != nil {
		master, err = aead.Open(nil, w[:nonceSize], w[nonceSize:], wrapAAD(cfg.ID, 1))
		legacy = err == nil
	}
	// argon2id's 64 MiB are garbage now: collect them before the backup
	// pipeline allocates, or both would count in the peak resident set.
	debug.FreeOSMemory()
	if err != nil {
		return nil, nil, ErrWrongPassphrase
	}
	if len(master) != masterKeySize {
		return nil, nil, fmt.Errorf("blockdiff: master key of %d bytes: %w", len(master), ErrCorrupt)
	}
	switch {
	case legacy && (cfg.Version >= 2 || len(cfg.MAC) > 0):
		return nil, nil, fmt.Errorf("blockdiff: config of format version %d holds a version-1 key: %w", cfg.Version, ErrTampered)
	case !legacy && cfg.Version < 2:
		return nil, nil, fmt.Errorf("blockdiff: config says format version %d but its key belongs to a version-2 repository (the config MAC was stripped): %w", cfg.Version, ErrTampered)
	case !legacy && len(cfg.MAC) == 0:
		return nil, nil, fmt.Errorf("blockdiff: the config's MAC is missing: %w", ErrTampered)
	case !legacy && subtle.ConstantTimeCompare(cfg.MAC, configMAC(cfg, master)) != 1:
		return nil, nil, fmt.Errorf("blockdiff: the config's security parameters do not match its MAC (cipher, KDF, ID keying, chunker, block size or version changed): %w", ErrTampered)
	}
	if legacy {
		return master, aead, nil
	}
	return master, nil, nil
}

// newRepository assembles an open repository.
func newRepository(store objstore.Store, cfg Config, master []byte, opts Options) (*Repository, error) {
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	if opts.Transfers <= 0 {
		opts.Transfers = 8
	}
	if opts.Compression == 0 {
		opts.Compression = zstd.SpeedFastest
	}
	switch {
	case opts.LockTTL < 0 || opts.LockTTL > MaxLockTTL:
		// Other clients ignore a lock whose key says more than MaxLockTTL:
		// such a lock would protect nothing.
		return nil, fmt.Errorf("blockdiff: lock TTL %s: want 0 (the default, %s) or a duration up to %s", opts.LockTTL, DefaultLockTTL, MaxLockTTL)
	case opts.LockTTL == 0:
		opts.LockTTL = DefaultLockTTL
	}
	if opts.LockWait < 0 {
		return nil, fmt.Errorf("blockdiff: lock wait %s: want 0 (the default, %s) or more", opts.LockWait, DefaultLockWait)
	}
	if opts.LockWait == 0 {
		opts.LockWait = DefaultLockWait
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c, err := newCodec(master, opts.Compression, opts.Workers)
	if err != nil {
		return nil, err
	}
	opts.Passphrase = nil // not needed any more; keep no copy of the secret
	r := &Repository{store: store, cfg: cfg, codec: c, opts: opts, log: log}
	r.cache = newIndexCache(opts.CacheDir, cfg.ID, log.Warn)
	return r, nil
}

// Config returns the repository's config (the wrapped key included, never the
// master key).
func (r *Repository) Config() Config { return r.cfg }

// BlockSize returns the repository's block size in bytes.
func (r *Repository) BlockSize() int { return r.cfg.BlockSize }

// Encrypted reports whether the repository encrypts its objects.
func (r *Repository) Encrypted() bool { return r.cfg.Encryption != nil }

// Store returns the store the repository lives in.
func (r *Repository) Store() objstore.Store { return r.store }

// Close releases the repository's workers; it does not close the store.
func (r *Repository) Close() error {
	r.codec.close()
	return nil
}
