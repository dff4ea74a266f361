// Package vmtest holds the tests of zfsrepl that need real OpenZFS: they run
// inside the OpenZFS guest (internal/testenv.RunInZFSVM), one VM boot for the
// whole package, and are skipped elsewhere. It has no code of its own.
package vmtest
