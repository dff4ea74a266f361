package main

import (
	"context"
	"fmt"

	"github.com/cairn-backup/cairn/blockdiff"
)

// readHintsCtx is readHints that gives up when ctx ends (a signal): reading
// stdin, or opening a FIFO no one writes to, can block without end, and a
// signal must still end the command. The abandoned read ends with the
// process.
func (a *app) readHintsCtx(ctx context.Context, name string) ([]blockdiff.Extent, error) {
	type result struct {
		hints []blockdiff.Extent
		err   error
	}
	done := make(chan result, 1)
	go func() {
		hs, err := a.readHints(name)
		done <- result{hs, err}
	}()
	select {
	case r := <-done:
		return r.hints, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("hints %s: %w", name, context.Cause(ctx))
	}
}
