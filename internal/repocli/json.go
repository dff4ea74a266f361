package repocli

import (
	"time"

	"github.com/cairn-backup/cairn/blockdiff"
)

// VersionJSON is one version as the binaries' --json output shows it.
type VersionJSON struct {
	ID        string             `json:"id"`
	Volume    string             `json:"volume"`
	Kind      string             `json:"kind"`
	Created   string             `json:"created"`
	Size      int64              `json:"size"`
	BlockSize int                `json:"block_size,omitempty"` // block versions only
	Status    string             `json:"status"`
	Protected bool               `json:"protected"`
	Labels    map[string]string  `json:"labels"`
	Base      string             `json:"base,omitempty"`
	Error     string             `json:"error,omitempty"`
	Stats     blockdiff.Stats    `json:"stats"`
	Damage    []blockdiff.Damage `json:"damage,omitempty"` // blocks a scrub found missing or corrupt
}

// NewVersionJSON returns v's --json form (times in RFC 3339).
func NewVersionJSON(v *blockdiff.Version) VersionJSON {
	return VersionJSON{ID: v.ID, Volume: v.Volume, Kind: string(v.Kind),
		Created: v.Created.Format(time.RFC3339), Size: v.Size, BlockSize: v.BlockSize,
		Status: string(v.Status), Protected: v.Protected, Labels: v.Labels, Base: v.Base,
		Error: v.Error, Stats: v.Stats, Damage: v.Damage}
}

// VersionsJSON returns the --json form of vs: an array, empty rather than null.
func VersionsJSON(vs []*blockdiff.Version) []VersionJSON {
	out := make([]VersionJSON, 0, len(vs))
	for _, v := range vs {
		out = append(out, NewVersionJSON(v))
	}
	return out
}
