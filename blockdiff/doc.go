// Package blockdiff is cairn's content-addressed backup repository and the
// Benji-style block backup and restore built on it.
//
// A repository lives in an objstore.Store (a prefix of a bucket or a
// directory). Volumes are cut into fixed-size blocks; each distinct block is
// stored once as a data object named by its BLAKE3-256 hash (keyed when the
// repository is encrypted), compressed with zstd when that helps and sealed
// with AES-256-GCM when encrypted. A version is a manifest listing the block
// references of one backup; it is written after all of its data, so an
// interrupted backup never leaves a version that points at missing blocks.
//
// FORMAT.md, next to this file, specifies the stored objects so that another
// implementation can read a repository.
package blockdiff
