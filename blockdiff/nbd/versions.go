package nbd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/cairn-backup/cairn/blockdiff"
)

// Versions offers the versions of r as exports. The export name is the
// version ID; List returns the valid versions (every version with
// opts.AllowInvalid). An export is a blockdiff.VersionReader opened with
// opts: blocks are read on demand, verified against their IDs, and
// opts.CacheBlocks of them are cached per connection; each holds a shared
// repository lock while open (unless r was opened with
// blockdiff.Options.NoReadLock), so that a cleanup waits for it. Blocks are
// read with ctx, which should live as long as the server.
func Versions(ctx context.Context, r *blockdiff.Repository, opts blockdiff.ReaderOptions) Exports {
	return versionExports{ctx: ctx, r: r, opts: opts}
}

// ServeVersions serves the versions of r read-only on l until ctx is done
// (then it returns nil) or l fails: a Server over Versions(ctx, r, opts).
// logger receives connection errors; nil means slog.Default().
func ServeVersions(ctx context.Context, l net.Listener, r *blockdiff.Repository, opts blockdiff.ReaderOptions, logger *slog.Logger) error {
	srv := &Server{Exports: Versions(ctx, r, opts), Logger: logger}
	return srv.Serve(ctx, l)
}

// versionExports offers a repository's versions as exports.
type versionExports struct {
	ctx  context.Context // the server's: blocks are read with it
	r    *blockdiff.Repository
	opts blockdiff.ReaderOptions
}

// Open opens version name for one connection.
func (e versionExports) Open(_ context.Context, name string) (Export, error) {
	vr, err := e.r.OpenVersion(e.ctx, name, e.opts)
	if errors.Is(err, blockdiff.ErrVersionNotFound) {
		return nil, fmt.Errorf("%w %q", ErrUnknownExport, name)
	}
	if err != nil {
		return nil, err
	}
	return vr, nil
}

// List returns the IDs of the versions a client may open.
func (e versionExports) List(ctx context.Context) ([]string, error) {
	vs, err := e.r.List(ctx, blockdiff.Filter{})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, v := range vs {
		if v.Status == blockdiff.StatusValid || e.opts.AllowInvalid {
			out = append(out, v.ID)
		}
	}
	return out, nil
}
