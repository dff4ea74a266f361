package config

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	"go.yaml.in/yaml/v3"

	"github.com/cairn-backup/cairn/retention"
	"github.com/cairn-backup/cairn/zfsrepl"
)

// Pruning is a job's parsed `pruning` section: KeepSender and KeepReceiver
// for push jobs, Keep for snap jobs.
type Pruning struct {
	KeepSender   zfsrepl.KeepRules
	KeepReceiver zfsrepl.KeepRules
	Keep         zfsrepl.KeepRules
}

// Snapshotting is a job's parsed `snapshotting` section.
type Snapshotting struct {
	// Type is periodic, cron or manual.
	Type string
	// Prefix starts every snapshot name the job takes.
	Prefix string
	// Interval between snapshots (periodic).
	Interval time.Duration
	// Cron is the cron specification of the snapshot times (cron): five
	// fields (minute, hour, day of month, month, day of week) or a
	// descriptor such as @hourly, in the daemon's local time unless it
	// starts with CRON_TZ=Zone.
	Cron     string
	schedule cron.Schedule
	// TimestampFormat is the Go time layout of the UTC timestamp after the
	// prefix (zrepl's utc_timestamp_format; "dense" by default).
	TimestampFormat string
	// Hooks run before and after each filesystem's snapshot.
	Hooks []Hook
}

// Hook is a `command` snapshot hook.
type Hook = zfsrepl.Hook

// zrepl's named timestamp formats.
var timestampFormats = map[string]string{
	"dense":        zfsrepl.DenseTimestamp,
	"human":        "2006-01-02_15:04:05",
	"iso-8601":     "2006-01-02T15:04:05.000Z",
	"unix-seconds": zfsrepl.UnixSecondsTimestamp,
}

// mapping checks that n is a mapping with only the allowed keys and returns
// its values by key; errors name the key and its line.
func mapping(n *yaml.Node, where string, allowed ...string) (map[string]*yaml.Node, error) {
	if n.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: %s: expected a mapping", n.Line, where)
	}
	m := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if !slices.Contains(allowed, k.Value) {
			return nil, fmt.Errorf("line %d: %s: unknown key %q (known: %s)", k.Line, where, k.Value, strings.Join(allowed, ", "))
		}
		m[k.Value] = n.Content[i+1]
	}
	return m, nil
}

func scalar(n *yaml.Node, key string) (string, error) {
	if n.Kind != yaml.ScalarNode {
		return "", fmt.Errorf("line %d: %s: expected a scalar", n.Line, key)
	}
	return n.Value, nil
}

func boolean(n *yaml.Node, key string) (bool, error) {
	s, err := scalar(n, key)
	if err != nil {
		return false, err
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, fmt.Errorf("line %d: %s: %q is not a boolean", n.Line, key, s)
	}
	return b, nil
}

func duration(n *yaml.Node, key string) (time.Duration, error) {
	s, err := scalar(n, key)
	if err != nil {
		return 0, err
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("line %d: %s: %q is not a positive duration", n.Line, key, s)
	}
	return d, nil
}

// parsePruning parses a job's `pruning` section. A push job needs
// keep_sender and keep_receiver, a snap job keep; not_replicated is allowed
// on the sender only.
func parsePruning(n *yaml.Node, typ string, jobLine int) (Pruning, error) {
	var p Pruning
	if n.Kind == 0 {
		return p, fmt.Errorf("line %d: a %s job needs pruning", jobLine, typ)
	}
	keys := []string{"keep_sender", "keep_receiver"}
	if typ == "snap" {
		keys = []string{"keep"}
	}
	m, err := mapping(n, "pruning", keys...)
	if err != nil {
		return p, err
	}
	for _, k := range keys {
		v, ok := m[k]
		if !ok {
			return p, fmt.Errorf("line %d: pruning needs %s", n.Line, k)
		}
		rules, err := parseKeep(v, "pruning."+k, k != "keep_receiver")
		if err != nil {
			return p, err
		}
		switch k {
		case "keep_sender":
			p.KeepSender = rules
		case "keep_receiver":
			p.KeepReceiver = rules
		case "keep":
			p.Keep = rules
		}
	}
	return p, nil
}

func parseKeep(n *yaml.Node, where string, notReplicatedOK bool) (zfsrepl.KeepRules, error) {
	var k zfsrepl.KeepRules
	if n.Kind != yaml.SequenceNode {
		return k, fmt.Errorf("line %d: %s: expected a list of keep rules", n.Line, where)
	}
	for _, r := range n.Content {
		if r.Kind != yaml.MappingNode {
			return k, fmt.Errorf("line %d: %s: expected a keep rule mapping", r.Line, where)
		}
		var typ string
		for i := 0; i+1 < len(r.Content); i += 2 {
			if r.Content[i].Value == "type" {
				typ = r.Content[i+1].Value
			}
		}
		w := fmt.Sprintf("%s (%s)", where, typ)
		var m map[string]*yaml.Node
		var err error
		switch typ {
		case "not_replicated":
			if _, err = mapping(r, w, "type"); err != nil {
				return k, err
			}
			if !notReplicatedOK {
				return k, fmt.Errorf("line %d: %s: not_replicated only makes sense on the sender", r.Line, where)
			}
			k.NotReplicated = true
			continue
		case "last_n":
			m, err = mapping(r, w, "type", "count", "regex")
		case "grid":
			m, err = mapping(r, w, "type", "grid", "regex")
		case "regex":
			m, err = mapping(r, w, "type", "regex", "negate")
		case "":
			return k, fmt.Errorf("line %d: %s: keep rule without type", r.Line, where)
		default:
			return k, fmt.Errorf("line %d: %s: unknown keep rule type %q (known: not_replicated, last_n, grid, regex)", r.Line, where, typ)
		}
		if err != nil {
			return k, err
		}
		regex := ""
		if v, ok := m["regex"]; ok {
			if regex, err = scalar(v, "regex"); err != nil {
				return k, err
			}
		}
		var pol retention.Policy
		switch typ {
		case "last_n":
			v, ok := m["count"]
			if !ok {
				return k, fmt.Errorf("line %d: %s: last_n needs count", r.Line, where)
			}
			c, err := strconv.Atoi(v.Value)
			if err != nil {
				return k, fmt.Errorf("line %d: %s: count %q is not a number", v.Line, where, v.Value)
			}
			pol, err = retention.LastN(c, regex)
			if err != nil {
				return k, fmt.Errorf("line %d: %s: %w", v.Line, where, err)
			}
		case "grid":
			v, ok := m["grid"]
			if !ok {
				return k, fmt.Errorf("line %d: %s: grid needs grid", r.Line, where)
			}
			pol, err = retention.ParseGrid(v.Value, regex)
			if err != nil {
				return k, fmt.Errorf("line %d: %s: %w", v.Line, where, err)
			}
		case "regex":
			if _, ok := m["regex"]; !ok {
				return k, fmt.Errorf("line %d: %s: regex needs regex", r.Line, where)
			}
			neg := false
			if v, ok := m["negate"]; ok {
				if neg, err = boolean(v, "negate"); err != nil {
					return k, err
				}
			}
			pol, err = retention.Regex(regex, neg)
			if err != nil {
				return k, fmt.Errorf("line %d: %s: %w", r.Line, where, err)
			}
		}
		if err != nil {
			return k, fmt.Errorf("line %d: %s: %w", r.Line, where, err)
		}
		k.Policies = append(k.Policies, pol)
	}
	return k, nil
}

// parseSnapshotting parses a job's `snapshotting` section (push and snap
// jobs need one).
func parseSnapshotting(n *yaml.Node, jobType string, jobLine int) (Snapshotting, error) {
	s := Snapshotting{TimestampFormat: timestampFormats["dense"]}
	if n.Kind == 0 {
		return s, fmt.Errorf("line %d: a %s job needs snapshotting", jobLine, jobType)
	}
	var typ string
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == "type" {
				typ = n.Content[i+1].Value
			}
		}
	}
	s.Type = typ
	switch typ {
	case "manual":
		_, err := mapping(n, "snapshotting (manual)", "type")
		return s, err
	case "periodic", "cron":
	default:
		return s, fmt.Errorf("line %d: snapshotting: type %q is not periodic, cron or manual", n.Line, typ)
	}
	when := "interval"
	if typ == "cron" {
		when = "cron"
	}
	m, err := mapping(n, "snapshotting ("+typ+")", "type", "prefix", when, "utc_timestamp_format", "timestamp_format", "hooks")
	if err != nil {
		return s, err
	}
	v, ok := m["prefix"]
	if !ok || v.Value == "" {
		return s, fmt.Errorf("line %d: snapshotting: %s needs a prefix", n.Line, typ)
	}
	s.Prefix = v.Value
	if strings.ContainsAny(s.Prefix, "@#/ ") {
		return s, fmt.Errorf("line %d: snapshotting: prefix %q contains @, #, / or a space", v.Line, s.Prefix)
	}
	v, ok = m[when]
	if !ok {
		return s, fmt.Errorf("line %d: snapshotting: %s needs %s", n.Line, typ, map[string]string{"interval": "an interval", "cron": "a cron specification"}[when])
	}
	if typ == "cron" {
		s.Cron = v.Value
		if s.schedule, err = cron.ParseStandard(v.Value); err != nil {
			return s, fmt.Errorf("line %d: snapshotting.cron: %q: %w", v.Line, v.Value, err)
		}
	} else if s.Interval, err = duration(v, "snapshotting.interval"); err != nil {
		return s, err
	}
	for _, key := range []string{"utc_timestamp_format", "timestamp_format"} {
		if v, ok := m[key]; ok {
			if f, named := timestampFormats[v.Value]; named {
				s.TimestampFormat = f
			} else if v.Value != "" {
				s.TimestampFormat = v.Value
			}
		}
	}
	if v, ok := m["hooks"]; ok {
		if s.Hooks, err = parseHooks(v); err != nil {
			return s, err
		}
	}
	return s, nil
}

func parseHooks(n *yaml.Node) ([]Hook, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("line %d: snapshotting.hooks: expected a list", n.Line)
	}
	var hooks []Hook
	for _, h := range n.Content {
		m, err := mapping(h, "snapshotting.hooks", "type", "path", "timeout", "err_is_fatal", "filesystems")
		if err != nil {
			return nil, err
		}
		if t := m["type"]; t == nil || t.Value != "command" {
			return nil, fmt.Errorf("line %d: snapshotting.hooks: only type command is supported", h.Line)
		}
		hk := Hook{Timeout: 30 * time.Second}
		p := m["path"]
		if p == nil || !filepath.IsAbs(p.Value) {
			return nil, fmt.Errorf("line %d: snapshotting.hooks: path must be absolute", h.Line)
		}
		hk.Path = p.Value
		if v, ok := m["timeout"]; ok {
			if hk.Timeout, err = duration(v, "timeout"); err != nil {
				return nil, err
			}
		}
		if v, ok := m["err_is_fatal"]; ok {
			if hk.ErrIsFatal, err = boolean(v, "err_is_fatal"); err != nil {
				return nil, err
			}
		}
		if v, ok := m["filesystems"]; ok {
			var fm map[string]bool
			if err := v.Decode(&fm); err != nil {
				return nil, fmt.Errorf("line %d: hooks.filesystems: %w", v.Line, err)
			}
			if hk.Filesystems, err = zfsrepl.NewFilter(fm); err != nil {
				return nil, fmt.Errorf("line %d: hooks: %w", v.Line, err)
			}
		}
		hooks = append(hooks, hk)
	}
	return hooks, nil
}

// Global is the parsed `global` section.
type Global struct {
	// Logging outlets; only stdout is supported.
	Logging []Logging
	// Monitoring listeners; only prometheus.
	Monitoring []Monitoring
	// ControlSocket is global.control.sockpath (status, signal).
	ControlSocket string
}

// Logging is one global.logging outlet.
type Logging struct {
	Type   string // stdout
	Level  string // debug, info, warn, error
	Format string // human, logfmt, json, text
}

// Monitoring is one global.monitoring entry.
type Monitoring struct {
	Type   string // prometheus
	Listen string
}

// DefaultControlSocket is where status and signal talk to the daemon when
// global.control.sockpath is not set (zrepl's default).
const DefaultControlSocket = "/var/run/zrepl/control"

// parseGlobal parses the `global` section; keys it ignores go to
// c.Ignored.
func parseGlobal(n *yaml.Node, c *Config) (Global, error) {
	g := Global{ControlSocket: DefaultControlSocket}
	if n.Kind == 0 {
		return g, nil
	}
	m, err := mapping(n, "global", "logging", "monitoring", "control", "serve")
	if err != nil {
		return g, err
	}
	ignore := func(n *yaml.Node, key, path, reason string) {
		if k, _ := child(n, key); k != nil {
			c.Ignored = append(c.Ignored, Ignored{Line: k.Line, Key: path, Reason: reason})
		}
	}
	if v, ok := m["logging"]; ok {
		if v.Kind != yaml.SequenceNode {
			return g, fmt.Errorf("line %d: global.logging: expected a list", v.Line)
		}
		for i, o := range v.Content {
			lm, err := mapping(o, "global.logging", "type", "level", "format", "time", "color")
			if err != nil {
				return g, err
			}
			l := Logging{Level: "info", Format: "human"}
			if t := lm["type"]; t != nil {
				l.Type = t.Value
			}
			if l.Type != "stdout" {
				return g, fmt.Errorf("line %d: global.logging: type %q is not supported (stdout)", o.Line, l.Type)
			}
			if t := lm["level"]; t != nil {
				l.Level = t.Value
			}
			switch l.Level {
			case "debug", "info", "warn", "error":
			default:
				return g, fmt.Errorf("line %d: global.logging: level %q is not debug, info, warn or error", o.Line, l.Level)
			}
			if t := lm["format"]; t != nil {
				l.Format = t.Value
			}
			switch l.Format {
			case "human", "logfmt", "json", "text":
			default:
				return g, fmt.Errorf("line %d: global.logging: format %q is not human, logfmt, json or text", o.Line, l.Format)
			}
			ignore(o, "time", "global.logging.time", "log lines always carry the time")
			ignore(o, "color", "global.logging.color", "log lines are never coloured")
			if i > 0 {
				c.Ignored = append(c.Ignored, Ignored{Line: o.Line, Key: "global.logging", Reason: "only the first outlet is used"})
			}
			g.Logging = append(g.Logging, l)
		}
	}
	if v, ok := m["monitoring"]; ok {
		if v.Kind != yaml.SequenceNode {
			return g, fmt.Errorf("line %d: global.monitoring: expected a list", v.Line)
		}
		for _, o := range v.Content {
			mm, err := mapping(o, "global.monitoring", "type", "listen", "listen_freebind")
			if err != nil {
				return g, err
			}
			if t := mm["type"]; t == nil || t.Value != "prometheus" {
				return g, fmt.Errorf("line %d: global.monitoring: only type prometheus is supported", o.Line)
			}
			l := mm["listen"]
			if l == nil || l.Value == "" {
				return g, fmt.Errorf("line %d: global.monitoring: prometheus needs listen", o.Line)
			}
			ignore(o, "listen_freebind", "global.monitoring.listen_freebind", "cairn listens on the address as the system allows")
			g.Monitoring = append(g.Monitoring, Monitoring{Type: "prometheus", Listen: l.Value})
		}
	}
	if v, ok := m["control"]; ok {
		cm, err := mapping(v, "global.control", "sockpath")
		if err != nil {
			return g, err
		}
		if s := cm["sockpath"]; s != nil && s.Value != "" {
			g.ControlSocket = s.Value
		}
	}
	if v, ok := m["serve"]; ok {
		if _, err := mapping(v, "global.serve", "stdinserver"); err != nil {
			return g, err
		}
		ignore(n, "serve", "global.serve", "cairn has no stdinserver transport")
	}
	return g, nil
}

// Replication is a push job's `replication` section. cairn accepts it as
// zrepl documents it and does not act on it (Config.Ignored).
type Replication struct {
	// Protection's Initial and Incremental: guarantee_resumability,
	// guarantee_incremental_replication or guarantee_nothing.
	Protection struct{ Initial, Incremental string }
	// Concurrency's Steps and SizeEstimates.
	Concurrency struct{ Steps, SizeEstimates int }
}

var protections = []string{"guarantee_resumability", "guarantee_incremental_replication", "guarantee_nothing"}

func parseReplication(n *yaml.Node) (Replication, error) {
	var r Replication
	if n.Kind == 0 {
		return r, nil
	}
	m, err := mapping(n, "replication", "protection", "concurrency")
	if err != nil {
		return r, err
	}
	if v, ok := m["protection"]; ok {
		pm, err := mapping(v, "replication.protection", "initial", "incremental")
		if err != nil {
			return r, err
		}
		for key, dst := range map[string]*string{"initial": &r.Protection.Initial, "incremental": &r.Protection.Incremental} {
			if p := pm[key]; p != nil {
				if !slices.Contains(protections, p.Value) {
					return r, fmt.Errorf("line %d: replication.protection.%s: %q is not %s", p.Line, key, p.Value, strings.Join(protections, ", "))
				}
				*dst = p.Value
			}
		}
	}
	if v, ok := m["concurrency"]; ok {
		cm, err := mapping(v, "replication.concurrency", "steps", "size_estimates")
		if err != nil {
			return r, err
		}
		for key, dst := range map[string]*int{"steps": &r.Concurrency.Steps, "size_estimates": &r.Concurrency.SizeEstimates} {
			if p := cm[key]; p != nil {
				if *dst, err = strconv.Atoi(p.Value); err != nil || *dst < 1 {
					return r, fmt.Errorf("line %d: replication.concurrency.%s: %q is not a positive number", p.Line, key, p.Value)
				}
			}
		}
	}
	return r, nil
}

// Recv is a sink job's `recv` section. cairn accepts it as zrepl documents
// it and does not act on it (Config.Ignored).
type Recv struct {
	// PlaceholderEncryption is placeholder.encryption: unspecified,
	// inherit or off.
	PlaceholderEncryption string
	// PropertiesInherit and PropertiesOverride are properties.inherit
	// and properties.override.
	PropertiesInherit  []string
	PropertiesOverride map[string]string
	// BandwidthLimit is recv.bandwidth_limit.
	BandwidthLimit BandwidthLimit
}

func parseRecv(n *yaml.Node) (Recv, error) {
	var r Recv
	if n.Kind == 0 {
		return r, nil
	}
	m, err := mapping(n, "recv", "placeholder", "properties", "bandwidth_limit")
	if err != nil {
		return r, err
	}
	if v, ok := m["placeholder"]; ok {
		pm, err := mapping(v, "recv.placeholder", "encryption")
		if err != nil {
			return r, err
		}
		if e := pm["encryption"]; e != nil {
			switch e.Value {
			case "unspecified", "inherit", "off":
				r.PlaceholderEncryption = e.Value
			default:
				return r, fmt.Errorf("line %d: recv.placeholder.encryption: %q is not unspecified, inherit or off", e.Line, e.Value)
			}
		}
	}
	if v, ok := m["properties"]; ok {
		pm, err := mapping(v, "recv.properties", "inherit", "override")
		if err != nil {
			return r, err
		}
		if p := pm["inherit"]; p != nil {
			if err := p.Decode(&r.PropertiesInherit); err != nil {
				return r, fmt.Errorf("line %d: recv.properties.inherit: expected a list of properties", p.Line)
			}
		}
		if p := pm["override"]; p != nil {
			if err := p.Decode(&r.PropertiesOverride); err != nil {
				return r, fmt.Errorf("line %d: recv.properties.override: expected a mapping of properties", p.Line)
			}
		}
	}
	if v, ok := m["bandwidth_limit"]; ok {
		bm, err := mapping(v, "recv.bandwidth_limit", "max", "bucket_capacity")
		if err != nil {
			return r, err
		}
		var raw rawBandwidthLimit
		if p := bm["max"]; p != nil {
			raw.Max = p.Value
		}
		if p := bm["bucket_capacity"]; p != nil {
			raw.BucketCapacity = p.Value
		}
		if r.BandwidthLimit, err = raw.parse(); err != nil {
			return r, fmt.Errorf("line %d: recv.%w", v.Line, err)
		}
	}
	return r, nil
}

// SnapshotConfig returns the snapshotter settings of a periodic
// snapshotting section.
func (s Snapshotting) SnapshotConfig() zfsrepl.SnapshotConfig {
	c := zfsrepl.SnapshotConfig{Prefix: s.Prefix, Interval: s.Interval, TimestampFormat: s.TimestampFormat, Hooks: s.Hooks}
	if s.schedule != nil {
		c.Schedule = s.schedule.Next
	}
	return c
}
