package blockdiff

import "errors"

// ErrNotRepository is returned by Open when the store holds no config object.
var ErrNotRepository = errors.New("blockdiff: no repository here (config object missing; run init)")

// ErrRepositoryExists is returned by Init when the store already holds a repository.
var ErrRepositoryExists = errors.New("blockdiff: a repository already exists here")

// ErrPassphraseRequired is returned by Open for an encrypted repository when no
// passphrase was given.
var ErrPassphraseRequired = errors.New("blockdiff: repository is encrypted: a passphrase is required")

// ErrWrongPassphrase is returned by Open when the passphrase does not unwrap the
// repository's master key.
var ErrWrongPassphrase = errors.New("blockdiff: wrong passphrase (the master key did not decrypt)")

// ErrUnsupportedFormat is returned when a stored object uses a format version
// or a transform this implementation does not know.
var ErrUnsupportedFormat = errors.New("blockdiff: unsupported repository format")

// ErrCorrupt is returned (wrapped) when a stored object fails to decode or its
// content does not match its ID.
var ErrCorrupt = errors.New("blockdiff: corrupt object")

// ErrVersionNotFound is returned (wrapped) when a version ID names no manifest.
var ErrVersionNotFound = errors.New("blockdiff: version not found")

// ErrProtected is returned (wrapped) by Remove for a protected version.
var ErrProtected = errors.New("blockdiff: version is protected")

// ErrTooYoung is returned (wrapped) by Remove for a version younger than the
// minimum age, unless forced.
var ErrTooYoung = errors.New("blockdiff: version is younger than the minimum age for removal")

// ErrHintMismatch is returned (wrapped) by Backup when a block outside the hints
// differs from the base version: the hints were wrong and the backup failed.
var ErrHintMismatch = errors.New("blockdiff: hints are wrong: a block outside the hinted extents changed")

// ErrNotValid is returned (wrapped) when an operation needs a valid version
// (a restore, a differential base) and the version is invalid or incomplete.
var ErrNotValid = errors.New("blockdiff: version is not valid")

// ErrTampered is returned (wrapped) by Open when an encrypted repository's
// config does not match its MAC under the master key, or its MAC was
// stripped: someone with write access to the store changed its security
// parameters (FORMAT.md, "Threat model").
var ErrTampered = errors.New("blockdiff: the repository was tampered with (its config does not match its authentication)")

// ErrNotEncrypted is returned by Open when a passphrase was given but the
// config says the repository is not encrypted: a client that holds a
// passphrase never writes plaintext.
var ErrNotEncrypted = errors.New("blockdiff: a passphrase was given but the repository's config says it is not encrypted: " +
	"the repository was tampered with (encryption removed from its config) or is not encrypted; " +
	"refusing to write plaintext (for an unencrypted repository, give no passphrase)")
