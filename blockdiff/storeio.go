package blockdiff

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"sync"
)

// readInto reads the whole object at key into buf (reusing its capacity),
// refusing objects larger than limit.
func (r *Repository) readInto(ctx context.Context, key string, buf []byte, limit int64) ([]byte, error) {
	rc, err := r.store.Get(ctx, key, 0, -1)
	if err != nil {
		return nil, fmt.Errorf("blockdiff: get %s: %w", key, err)
	}
	defer rc.Close()
	buf = buf[:0]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := rc.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > limit {
			return nil, fmt.Errorf("blockdiff: %s is larger than %d bytes: %w", key, limit, ErrCorrupt)
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, fmt.Errorf("blockdiff: read %s: %w", key, err)
		}
	}
}

// putMeta seals and stores a manifest or index segment.
func (r *Repository) putMeta(ctx context.Context, key string, plain []byte) error {
	body := r.codec.seal(nil, key, plain, true)
	if err := r.store.Put(ctx, key, bytes.NewReader(body), int64(len(body))); err != nil {
		return fmt.Errorf("blockdiff: put %s: %w", key, err)
	}
	return nil
}

// getMeta fetches and opens a manifest or index segment.
func (r *Repository) getMeta(ctx context.Context, key string) ([]byte, error) {
	body, err := r.readInto(ctx, key, nil, maxMetaSize+1024)
	if err != nil {
		return nil, err
	}
	plain, err := r.codec.open(key, body, nil, true)
	if err != nil {
		return nil, fmt.Errorf("blockdiff: %w", err)
	}
	return plain, nil
}

// Version reads the manifest of the version id, references included. To
// read only its metadata, List (or the maintenance operations) read the
// header alone.
func (r *Repository) Version(ctx context.Context, id string) (*Version, error) {
	var refs []Ref
	v, err := r.scanVersion(ctx, id, func(n uint64) {
		refs = make([]Ref, 0, min(n, 1<<20)) // n is not trusted further: append grows
	}, func(ref Ref) error {
		refs = append(refs, ref)
		return nil
	})
	if err != nil {
		return nil, err
	}
	v.refs = refs
	return v, nil
}

// putVersion writes (or rewrites) a manifest; Put is atomic, so readers see
// the old manifest or the new one. A repository of format 3 gets a framed
// manifest (manifest3.go), older ones the version-1 encoding.
func (r *Repository) putVersion(ctx context.Context, v *Version) error {
	if r.framedManifests() {
		body, err := r.encodeFramed(v)
		if err != nil {
			return err
		}
		key := versionKey(v.ID)
		if err := r.store.Put(ctx, key, bytes.NewReader(body), int64(len(body))); err != nil {
			return fmt.Errorf("blockdiff: put %s: %w", key, err)
		}
		return nil
	}
	plain, err := encodeManifest(v)
	if err != nil {
		return err
	}
	return r.putMeta(ctx, versionKey(v.ID), plain)
}

// writeIndex stores an index segment naming the objects a backup created.
func (r *Repository) writeIndex(ctx context.Context, entries []indexEntry) error {
	if len(entries) == 0 {
		return nil
	}
	name := make([]byte, 16)
	_, _ = rand.Read(name)
	key := "index/" + hex.EncodeToString(name)
	err := r.putMeta(ctx, key, encodeIndex(entries))
	r.donePending(key, entries, err == nil)
	return err
}

// parallel runs fn for 0..n-1 on Transfers goroutines and returns the first
// error, cancelling the others.
func (r *Repository) parallel(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(r.opts.Transfers, max(n, 1)) {
		wg.Go(func() {
			for i := range next {
				if err := fn(ctx, i); err != nil {
					cancel(err)
				}
			}
		})
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err := context.Cause(ctx); err != nil && ctx.Err() != nil {
		return err
	}
	return nil
}
