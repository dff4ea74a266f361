//go:build !cgo

package cli

const builtWithCgo = false
