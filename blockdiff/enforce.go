package blockdiff

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/cairn-backup/cairn/retention"
)

// EnforceOptions tune Enforce.
type EnforceOptions struct {
	// Filter selects the versions (and so the volumes) the policy applies to.
	Filter Filter
	// DryRun decides and reports, removing nothing.
	DryRun bool
	// Now is the time the policy is evaluated at; zero means time.Now().
	Now time.Time
	// Location is the time zone of Benji's calendar categories; nil means
	// time.Local, as with Benji.
	Location *time.Location
	// FailedGrace is how long failed backups (StatusFailed: the backup
	// failed or was interrupted) are kept for a look before Enforce removes
	// them; zero means DefaultGrace, negative none. Versions a scrub marked
	// invalid are never removed: their data may be worth saving.
	FailedGrace time.Duration
}

// EnforceDecision is the verdict on one version.
type EnforceDecision struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
	// Reasons are the rules that kept the version; for a skipped version,
	// why the policy did not count it (protected, invalid, incomplete).
	Reasons []string `json:"reasons,omitempty"`
	Error   string   `json:"error,omitempty"` // why a removal failed
}

// VolumeEnforcement is what Enforce decided for one volume.
type VolumeEnforcement struct {
	Volume  string            `json:"volume"`
	Kept    []EnforceDecision `json:"kept"`
	Removed []EnforceDecision `json:"removed"` // with DryRun: would be removed
	Skipped []EnforceDecision `json:"skipped"` // never counted nor removed
}

// EnforceResult is the outcome of Enforce, volumes in name order and versions
// youngest first.
type EnforceResult struct {
	DryRun  bool                `json:"dry_run"`
	Now     time.Time           `json:"now"`
	Volumes []VolumeEnforcement `json:"volumes"`
	// Damaged are the version manifests that could not be read (their
	// volume is unknown): skipped, with a warning.
	Damaged []EnforceDecision `json:"damaged,omitempty"`
}

// Enforce applies a retention policy (retention.Parse: Benji rules such as
// "latest7" or "latest3,days30,months3", or a zrepl grid such as
// "1x1h(keep=all) | 24x1h | 30x1d") to the versions of each volume that
// opts.Filter selects, and removes the versions no rule keeps. Protected,
// invalid and incomplete versions are neither counted by the rules nor
// removed; failed backups are not counted, and removed once older than
// opts.FailedGrace. Data is reclaimed by a later Cleanup.
func (r *Repository) Enforce(ctx context.Context, rules string, opts EnforceOptions) (*EnforceResult, error) {
	policy, err := retention.Parse(rules, opts.Location)
	if err != nil {
		return nil, fmt.Errorf("blockdiff: enforce: %w", err)
	}
	return r.EnforcePolicy(ctx, policy, opts)
}

// EnforcePolicy is Enforce with a parsed policy.
func (r *Repository) EnforcePolicy(ctx context.Context, policy retention.Policy, opts EnforceOptions) (*EnforceResult, error) {
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	vs, err := r.List(ctx, opts.Filter)
	if err != nil {
		return nil, err
	}
	byVol := map[string][]*Version{}
	var damaged []EnforceDecision
	for _, v := range vs {
		if v.Status == StatusDamaged { // its volume is unknown: never counted nor removed
			r.log.Warn("enforce skips a damaged version manifest (remove it with rm)", "version", v.ID, "err", v.Error)
			damaged = append(damaged, EnforceDecision{ID: v.ID, Reasons: []string{"damaged: " + v.Error}})
			continue
		}
		byVol[v.Volume] = append(byVol[v.Volume], v)
	}
	vols := make([]string, 0, len(byVol))
	for name := range byVol {
		vols = append(vols, name)
	}
	sort.Strings(vols)
	failedGrace := opts.FailedGrace
	if failedGrace == 0 {
		failedGrace = DefaultGrace
	}
	res := &EnforceResult{DryRun: opts.DryRun, Now: now, Volumes: []VolumeEnforcement{}, Damaged: damaged}
	var failed int
	var lastErr error
	for _, name := range vols {
		ve := VolumeEnforcement{Volume: name, Kept: []EnforceDecision{}, Removed: []EnforceDecision{}, Skipped: []EnforceDecision{}}
		var items []retention.Item
		created := map[string]time.Time{}
		versions := byVol[name]
		sort.SliceStable(versions, func(i, j int) bool { return versions[i].Created.After(versions[j].Created) })
		for _, v := range versions {
			switch {
			case v.Protected:
				ve.Skipped = append(ve.Skipped, EnforceDecision{ID: v.ID, Created: v.Created, Reasons: []string{"protected"}})
			case v.Status == StatusFailed && now.Sub(v.Created) >= max(failedGrace, 0):
				ve.Removed = append(ve.Removed, r.enforceRemove(ctx, opts.DryRun,
					EnforceDecision{ID: v.ID, Created: v.Created, Reasons: []string{"failed backup older than " + failedGrace.String()}}, &failed, &lastErr))
			case v.Status != StatusValid:
				ve.Skipped = append(ve.Skipped, EnforceDecision{ID: v.ID, Created: v.Created, Reasons: []string{string(v.Status)}})
			default:
				items = append(items, retention.Item{Name: v.ID, Created: v.Created})
				created[v.ID] = v.Created
			}
		}
		for _, d := range retention.Explain(policy, now, items) {
			ed := EnforceDecision{ID: d.Item.Name, Created: created[d.Item.Name], Reasons: d.Reasons}
			if d.Keep {
				ve.Kept = append(ve.Kept, ed)
				continue
			}
			ve.Removed = append(ve.Removed, r.enforceRemove(ctx, opts.DryRun, ed, &failed, &lastErr))
		}
		res.Volumes = append(res.Volumes, ve)
	}
	if failed > 0 {
		return res, fmt.Errorf("blockdiff: enforce: %d removals failed, last: %w", failed, lastErr)
	}
	return res, nil
}

// enforceRemove removes the version of d (unless dryRun) and returns d with
// the error of a failed removal, counted in failed and lastErr.
func (r *Repository) enforceRemove(ctx context.Context, dryRun bool, d EnforceDecision, failed *int, lastErr *error) EnforceDecision {
	if dryRun {
		return d
	}
	if err := r.Remove(ctx, d.ID, RemoveOptions{}); err != nil {
		d.Error = err.Error()
		*failed++
		*lastErr = err
	}
	return d
}
