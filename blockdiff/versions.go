package blockdiff

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Filter selects versions in List; zero fields match everything.
type Filter struct {
	Volume string            // exact volume name
	Labels map[string]string // every label must be present with this value
}

// match reports whether v passes the filter.
func (f Filter) match(v *Version) bool {
	if f.Volume != "" && v.Volume != f.Volume {
		return false
	}
	for k, want := range f.Labels {
		if got, ok := v.Labels[k]; !ok || got != want {
			return false
		}
	}
	return true
}

// List returns the versions that match f, oldest first, without their
// references (Version reads those): only each manifest's header is read, in
// parallel, so that memory grows with the number of versions only. A manifest that is damaged (it does not decode or authenticate)
// is listed with StatusDamaged, its ID, and the reason in Error, whatever the
// filter (its volume and labels are unknown), so that one bad object never
// hides the others; any other error (the store's) fails the listing.
func (r *Repository) List(ctx context.Context, f Filter) ([]*Version, error) {
	var ids []string
	for info, err := range r.store.List(ctx, "versions/") {
		if err != nil {
			return nil, fmt.Errorf("blockdiff: list versions: %w", err)
		}
		ids = append(ids, strings.TrimPrefix(info.Key, "versions/"))
	}
	all := make([]*Version, len(ids))
	err := r.parallel(ctx, len(ids), func(ctx context.Context, i int) error {
		v, err := r.versionHeader(ctx, ids[i])
		if errors.Is(err, ErrVersionNotFound) { // removed while listing
			return nil
		}
		if isDamage(err) && checkVersionID(ids[i]) == nil {
			r.log.Warn("damaged version manifest: listed as damaged (remove it with rm)", "version", ids[i], "err", err)
			v, err = &Version{ID: ids[i], Status: StatusDamaged, Error: err.Error(), Labels: map[string]string{}}, nil
		}
		all[i] = v
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make([]*Version, 0, len(all))
	for _, v := range all {
		if v != nil && (v.Status == StatusDamaged || f.match(v)) {
			out = append(out, v)
		}
	}
	sort.SliceStable(out, func(a, b int) bool {
		if !out[a].Created.Equal(out[b].Created) {
			return out[a].Created.Before(out[b].Created)
		}
		return out[a].ID < out[b].ID
	})
	return out, nil
}

// RemoveOptions tune Remove.
type RemoveOptions struct {
	// MinAge refuses to remove valid versions younger than this (Benji's
	// disallow_remove_when_younger); 0 disables the check.
	MinAge time.Duration
	// Force removes versions younger than MinAge. Protected versions are never
	// removed: unprotect them first.
	Force bool
}

// Remove deletes the manifest of version id. Its data objects stay until a
// cleanup finds that no version references them. A damaged manifest (List's
// StatusDamaged) is removed too: its protection and age cannot be read.
func (r *Repository) Remove(ctx context.Context, id string, opts RemoveOptions) error {
	if opts.MinAge < 0 {
		return fmt.Errorf("blockdiff: remove %s: negative minimum age %s", id, opts.MinAge)
	}
	v, err := r.versionHeader(ctx, id)
	if isDamage(err) {
		v, err = r.versionHeader(ctx, id) // read twice before deleting what may be a protected version
	}
	if isDamage(err) && checkVersionID(id) == nil {
		if err := r.store.Delete(ctx, versionKey(id)); err != nil {
			return fmt.Errorf("blockdiff: remove damaged version %s: %w", id, err)
		}
		r.log.Warn("damaged version removed", "version", id, "damage", err)
		return nil
	}
	if err != nil {
		return err
	}
	if v.Protected {
		return fmt.Errorf("blockdiff: remove %s: %w", id, ErrProtected)
	}
	age := time.Since(v.Created)
	if v.Status == StatusValid && !opts.Force && opts.MinAge > 0 && age < opts.MinAge {
		return fmt.Errorf("blockdiff: remove %s: %s old, minimum %s (use force): %w",
			id, age.Round(time.Second), opts.MinAge, ErrTooYoung)
	}
	if err := r.store.Delete(ctx, versionKey(id)); err != nil {
		return fmt.Errorf("blockdiff: remove %s: %w", id, err)
	}
	r.log.Info("version removed", "version", id, "volume", v.Volume)
	return nil
}

// update rewrites a manifest's metadata after fn changes it; fn sees no
// references, which the rewrite keeps as they are (updateHeader).
func (r *Repository) update(ctx context.Context, id string, fn func(v *Version) error) (*Version, error) {
	return r.updateHeader(ctx, id, fn)
}

// updateFull rewrites a manifest after fn changes it, references included
// (fn may read them). Concurrent updates of one version race (the last
// write wins); each is a single atomic Put.
func (r *Repository) updateFull(ctx context.Context, id string, fn func(v *Version) error) (*Version, error) {
	v, err := r.Version(ctx, id)
	if err != nil {
		return nil, err
	}
	return r.finishUpdate(ctx, id, v, fn)
}

// SetProtected protects or unprotects version id; a protected version cannot
// be removed. Only the manifest's header is rewritten; the Version returned
// holds no references.
func (r *Repository) SetProtected(ctx context.Context, id string, protected bool) (*Version, error) {
	return r.update(ctx, id, func(v *Version) error {
		v.Protected = protected
		return nil
	})
}

var labelKeyRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$`)

// CheckLabel validates a label key and value: keys are 1..63 characters of
// letters, digits, '.', '_', '/' and '-'; values are at most 255 printable bytes.
func CheckLabel(k, v string) error {
	if !labelKeyRe.MatchString(k) {
		return fmt.Errorf("blockdiff: bad label key %q", k)
	}
	if len(v) > 255 || strings.ContainsFunc(v, func(c rune) bool { return c < 0x20 || c == 0x7f }) {
		return fmt.Errorf("blockdiff: bad label value for %q: want at most 255 printable bytes", k)
	}
	return nil
}

// SetLabels sets the labels in set and deletes those in del on version id.
// Only the manifest's header is rewritten; the Version returned holds no
// references.
func (r *Repository) SetLabels(ctx context.Context, id string, set map[string]string, del []string) (*Version, error) {
	for k, val := range set {
		if err := CheckLabel(k, val); err != nil {
			return nil, err
		}
	}
	return r.update(ctx, id, func(v *Version) error {
		if v.Labels == nil {
			v.Labels = map[string]string{}
		}
		for k, val := range set {
			v.Labels[k] = val
		}
		for _, k := range del {
			delete(v.Labels, k)
		}
		return nil
	})
}

// isDamage reports whether err says a stored object is damaged (it does not
// decode or authenticate, or is of an unknown format), as opposed to an error
// of the store that says nothing about the object.
func isDamage(err error) bool {
	return err != nil && (errors.Is(err, ErrCorrupt) || errors.Is(err, ErrUnsupportedFormat))
}
