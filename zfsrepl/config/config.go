// Package config reads cairn-zrepl's configuration: a YAML file in zrepl's
// format. It understands the job types `push`, `sink` and `snap`, with their
// `connect` / `serve` transports (`tls`, `tcp`), `filesystems`, `root_fs`,
// `send.encrypted`, `send.raw`, `send.bandwidth_limit`,
// `conflict_resolution.initial_replication`, `snapshotting` (periodic with
// prefix, interval, utc_timestamp_format and command hooks; cron, the same
// with a cron specification for the interval; manual), `pruning`
// (keep_sender / keep_receiver / keep with not_replicated, last_n, grid,
// regex) and `global` (logging to stdout, prometheus monitoring,
// control.sockpath).
//
// Parse reads the whole file once into typed fields: the daemon and the
// commands use them as they are, nothing is parsed again. Any key zrepl does
// not document is an error naming the key and its line. Keys zrepl documents
// that cairn accepts but does not act on (`replication.protection`,
// `replication.concurrency`, `recv.placeholder.encryption`, `recv.properties`,
// `serve.listen_freebind`, a key that does not apply to the job's type, ...)
// are listed in Config.Ignored with their line, so `cairn-zrepl configcheck`
// can warn about them (and `--strict` refuse them).
package config

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/cairn-backup/cairn/zfsrepl"
	"github.com/cairn-backup/cairn/zfsrepl/transport"
	"github.com/cairn-backup/cairn/zfsrepl/zfs"
)

// Config is a whole configuration file, parsed.
type Config struct {
	// Global is the `global` section (its defaults when absent).
	Global Global
	// Jobs in file order.
	Jobs []Job
	// Ignored lists, in file order, the keys the file sets that cairn
	// accepts (zrepl documents them) but does not act on.
	Ignored []Ignored
}

// Ignored is a key of the file that cairn accepts but does not act on.
type Ignored struct {
	// Line of the key in the file.
	Line int `json:"line"`
	// Job is the job the key belongs to, "" for global keys.
	Job string `json:"job,omitempty"`
	// Key is the key's path, such as replication.protection.
	Key string `json:"key"`
	// Reason says what cairn does instead.
	Reason string `json:"reason"`
}

// String reads `line N: job "x": KEY is accepted but ignored: REASON`.
func (i Ignored) String() string {
	job := ""
	if i.Job != "" {
		job = fmt.Sprintf("job %q: ", i.Job)
	}
	return fmt.Sprintf("line %d: %s%s is accepted but ignored: %s", i.Line, job, i.Key, i.Reason)
}

// Job is one job; which fields apply depends on Type.
type Job struct {
	Name string
	Type string // push, sink or snap
	// Line is where the job starts in the file.
	Line int

	// Connect is a push job's transport to its sink.
	Connect *Connect
	// Filesystems is the filesystems section of push and snap jobs as
	// written; Filter is its parsed form.
	Filesystems map[string]bool
	Filter      *zfsrepl.Filter
	// Send is a push job's send section.
	Send Send
	// Plan is the planner settings of a push job: conflict_resolution's
	// initial_replication, and raw sends from send.encrypted or send.raw.
	Plan zfsrepl.PlanConfig
	// Snapshotting of push and snap jobs.
	Snapshotting Snapshotting
	// Pruning of push (KeepSender, KeepReceiver) and snap (Keep) jobs.
	Pruning Pruning
	// Replication is a push job's replication section (accepted, ignored).
	Replication Replication

	// RootFS is where a sink job receives (below root_fs/<client>).
	RootFS string
	// Serve is a sink job's listener.
	Serve *Serve
	// Recv is a sink job's recv section (accepted, ignored).
	Recv Recv
}

// Send is a push job's `send` section.
type Send struct {
	Encrypted bool // raw sends (-w)
	Raw       bool // zrepl's send.raw: also -w
	// BandwidthLimit is zrepl's send.bandwidth_limit.
	BandwidthLimit BandwidthLimit
}

// BandwidthLimit is zrepl's bandwidth_limit: a token bucket over the bytes
// of the send streams.
type BandwidthLimit struct {
	// Rate is the limit in bytes per second; 0 is no limit (max absent or
	// -1).
	Rate int64
	// Burst is the bucket's capacity in bytes (bucket_capacity, 128 KiB
	// by default).
	Burst int64
}

// DefaultBucketCapacity is bandwidth_limit.bucket_capacity's default.
const DefaultBucketCapacity = 128 << 10

type rawBandwidthLimit struct {
	Max            string `yaml:"max"`
	BucketCapacity string `yaml:"bucket_capacity"`
}

// parse reads a bandwidth_limit section; b nil is no limit.
func (b *rawBandwidthLimit) parse() (BandwidthLimit, error) {
	l := BandwidthLimit{Burst: DefaultBucketCapacity}
	if b == nil || b.Max == "" {
		return l, nil
	}
	rate, err := ParseSize(b.Max)
	if err != nil {
		return BandwidthLimit{}, fmt.Errorf("bandwidth_limit.max: %w", err)
	}
	l.Rate = max(rate, 0)
	if b.BucketCapacity != "" {
		if l.Burst, err = ParseSize(b.BucketCapacity); err != nil || l.Burst <= 0 {
			return BandwidthLimit{}, fmt.Errorf("bandwidth_limit.bucket_capacity: %q is not a positive size", b.BucketCapacity)
		}
	}
	return l, nil
}

var sizeUnits = map[string]float64{
	"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
	"k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
}

// ParseSize parses a size as zrepl writes them: a number, optionally
// followed by a unit (B, KiB, MiB, GiB, TiB, or the decimal kB, MB, GB, TB),
// "23.5 MiB". "-1" returns -1 (zrepl's "unlimited").
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if t == "-1" {
		return -1, nil
	}
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i < 0 {
		i = len(t)
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	f, err := strconv.ParseFloat(num, 64)
	mul, ok := sizeUnits[unit]
	if err != nil || !ok || f < 0 || f*mul > 1<<62 {
		return 0, fmt.Errorf("%q is not a size (like 23.5 MiB)", s)
	}
	return int64(f * mul), nil
}

// Connect is a push job's `connect` section.
type Connect struct {
	Type     string `yaml:"type"` // tls or tcp
	Address  string `yaml:"address"`
	CA       string `yaml:"ca"`
	Cert     string `yaml:"cert"`
	Key      string `yaml:"key"`
	ServerCN string `yaml:"server_cn"`
	// DialTimeout bounds each connection attempt (dial_timeout); 0 is
	// the system's.
	DialTimeout time.Duration `yaml:"-"`
}

type rawConnect struct {
	Connect     `yaml:",inline"`
	DialTimeout string `yaml:"dial_timeout"`
}

// Serve is a sink job's `serve` section.
type Serve struct {
	Type      string            `yaml:"type"` // tls or tcp
	Listen    string            `yaml:"listen"`
	CA        string            `yaml:"ca"`
	Cert      string            `yaml:"cert"`
	Key       string            `yaml:"key"`
	ClientCNs []string          `yaml:"client_cns"`
	Clients   map[string]string `yaml:"clients"` // tcp: IP -> identity
	// ListenFreebind is accepted and ignored (Config.Ignored).
	ListenFreebind bool `yaml:"listen_freebind"`
}

// Load reads and validates a configuration file.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// yamlUnknownField is how go.yaml.in/yaml words an unknown key.
var yamlUnknownField = regexp.MustCompile(`field (\S+) not found in type \S+`)

// userYAMLError words the decoder's errors for an operator: "unknown key
// "x"" rather than the Go type the key was decoded into.
func userYAMLError(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("config: %w", err)
	}
	msgs := make([]string, len(te.Errors))
	for i, m := range te.Errors {
		msgs[i] = yamlUnknownField.ReplaceAllString(m, `unknown key "$1"`)
	}
	return reworded{msg: "config: " + strings.Join(msgs, "; "), cause: err}
}

// reworded is an error with a message for operators that still unwraps to
// the decoder's error.
type reworded struct {
	msg   string
	cause error
}

func (e reworded) Error() string { return e.msg }
func (e reworded) Unwrap() error { return e.cause }

// rawConfig is the file as the strict decoder reads it; the sections read
// by hand stay YAML nodes until Parse turns them into Config's fields.
type rawConfig struct {
	Global yaml.Node `yaml:"global"`
	Jobs   []rawJob  `yaml:"jobs"`
}

type rawJob struct {
	Name               string          `yaml:"name"`
	Type               string          `yaml:"type"`
	Connect            *rawConnect     `yaml:"connect"`
	Filesystems        map[string]bool `yaml:"filesystems"`
	Send               rawSend         `yaml:"send"`
	ConflictResolution struct {
		InitialReplication string `yaml:"initial_replication"` // most_recent (default), all, fail
	} `yaml:"conflict_resolution"`
	Snapshotting yaml.Node `yaml:"snapshotting"`
	Pruning      yaml.Node `yaml:"pruning"`
	Replication  yaml.Node `yaml:"replication"`
	RootFS       string    `yaml:"root_fs"`
	Serve        *Serve    `yaml:"serve"`
	Recv         yaml.Node `yaml:"recv"`
}

type rawSend struct {
	Encrypted      bool               `yaml:"encrypted"`
	Raw            bool               `yaml:"raw"`
	BandwidthLimit *rawBandwidthLimit `yaml:"bandwidth_limit"`
}

// jobKeys are the keys that apply to each job type (besides name and type).
var jobKeys = map[string][]string{
	"push": {"connect", "filesystems", "send", "conflict_resolution", "snapshotting", "pruning", "replication"},
	"sink": {"root_fs", "serve", "recv"},
	"snap": {"filesystems", "snapshotting", "pruning"},
}

// Parse parses and validates a configuration.
func Parse(b []byte) (*Config, error) {
	var root yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(b)).Decode(&root); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var raw rawConfig
	strict := yaml.NewDecoder(bytes.NewReader(b))
	strict.KnownFields(true)
	if err := strict.Decode(&raw); err != nil {
		return nil, userYAMLError(err)
	}
	// Each job's node, for lines.
	var jobNodes []*yaml.Node
	if len(root.Content) == 1 {
		if _, v := child(root.Content[0], "jobs"); v != nil && v.Kind == yaml.SequenceNode {
			jobNodes = v.Content
		}
	}
	c := &Config{}
	var err error
	if c.Global, err = parseGlobal(&raw.Global, c); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for i := range raw.Jobs {
		r := &raw.Jobs[i]
		node := &yaml.Node{}
		if i < len(jobNodes) {
			node = jobNodes[i]
		}
		if seen[r.Name] {
			return nil, fmt.Errorf("line %d: job name %q used twice", node.Line, r.Name)
		}
		seen[r.Name] = true
		j, err := parseJob(r, node, c)
		if err != nil {
			return nil, fmt.Errorf("line %d: job %q: %w", node.Line, r.Name, err)
		}
		c.Jobs = append(c.Jobs, j)
	}
	slices.SortStableFunc(c.Ignored, func(a, b Ignored) int { return a.Line - b.Line })
	return c, nil
}

// child returns the key and value nodes of key in mapping n, or nils.
func child(n *yaml.Node, key string) (k, v *yaml.Node) {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil, nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i], n.Content[i+1]
		}
	}
	return nil, nil
}

// ignore records key (a path below n, the job's node) as ignored when the
// file sets it.
func (c *Config) ignore(n *yaml.Node, job, reason string, path ...string) {
	var k *yaml.Node
	for _, p := range path {
		if k, n = child(n, p); k == nil {
			return
		}
	}
	c.Ignored = append(c.Ignored, Ignored{Line: k.Line, Job: job, Key: strings.Join(path, "."), Reason: reason})
}

func parseJob(r *rawJob, node *yaml.Node, c *Config) (Job, error) {
	j := Job{Name: r.Name, Type: r.Type, Line: node.Line, Filesystems: r.Filesystems, RootFS: r.RootFS, Serve: r.Serve}
	if err := zfsrepl.ValidateJobName(j.Name); err != nil {
		return j, err
	}
	applies, ok := jobKeys[j.Type]
	switch {
	case j.Type == "source" || j.Type == "pull":
		return j, fmt.Errorf("job type %q is not supported (push, sink, snap)", j.Type)
	case !ok:
		return j, fmt.Errorf("unknown job type %q", j.Type)
	}
	if node.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(node.Content); i += 2 {
			k := node.Content[i]
			if k.Value != "name" && k.Value != "type" && !slices.Contains(applies, k.Value) {
				c.Ignored = append(c.Ignored, Ignored{Line: k.Line, Job: j.Name, Key: k.Value,
					Reason: fmt.Sprintf("a %s job does not use it (it uses %s)", j.Type, strings.Join(applies, ", "))})
			}
		}
	}
	var err error
	switch j.Type {
	case "push":
		if r.Connect == nil {
			return j, errors.New("a push job needs connect")
		}
		if j.Connect, err = r.Connect.parse(); err != nil {
			return j, fmt.Errorf("connect: %w", err)
		}
		if j.Connect.Type == "tcp" {
			for _, k := range []string{"ca", "cert", "key", "server_cn"} {
				c.ignore(node, j.Name, "a tcp connect does not use TLS files", "connect", k)
			}
		}
		switch ir := r.ConflictResolution.InitialReplication; ir {
		case "", "most_recent", "all", "fail":
			j.Plan.Initial = zfsrepl.InitialReplication(ir)
		default:
			return j, fmt.Errorf("conflict_resolution.initial_replication: %q is not most_recent, all or fail", ir)
		}
		j.Send = Send{Encrypted: r.Send.Encrypted, Raw: r.Send.Raw}
		if j.Send.BandwidthLimit, err = r.Send.BandwidthLimit.parse(); err != nil {
			return j, fmt.Errorf("send.%w", err)
		}
		j.Plan.Raw = j.Send.Encrypted || j.Send.Raw
		if j.Replication, err = parseReplication(&r.Replication); err != nil {
			return j, err
		}
		c.ignore(node, j.Name, "cairn always holds a step's snapshots and keeps a cursor bookmark (guarantee_resumability)", "replication", "protection")
		c.ignore(node, j.Name, "cairn replicates one filesystem and one step at a time", "replication", "concurrency")
	case "sink":
		if err := zfs.ValidateFilesystem(j.RootFS); err != nil {
			return j, fmt.Errorf("root_fs: %w", err)
		}
		if j.Serve == nil {
			return j, errors.New("a sink job needs serve")
		}
		if err := j.Serve.validate(); err != nil {
			return j, fmt.Errorf("serve: %w", err)
		}
		c.ignore(node, j.Name, "cairn listens on the address as the system allows", "serve", "listen_freebind")
		if j.Serve.Type == "tcp" {
			for _, k := range []string{"ca", "cert", "key", "client_cns"} {
				c.ignore(node, j.Name, "a tcp sink identifies clients by clients (address -> identity)", "serve", k)
			}
		} else {
			c.ignore(node, j.Name, "a tls sink identifies clients by client_cns", "serve", "clients")
		}
		if j.Recv, err = parseRecv(&r.Recv); err != nil {
			return j, err
		}
		c.ignore(node, j.Name, "placeholders are created as ZFS does by default: they inherit their parent's encryption", "recv", "placeholder", "encryption")
		c.ignore(node, j.Name, "received properties are kept as sent", "recv", "properties")
		c.ignore(node, j.Name, "receives are not limited (limit the push job's send)", "recv", "bandwidth_limit")
	}
	switch j.Type {
	case "push", "snap":
		if len(j.Filesystems) == 0 {
			return j, fmt.Errorf("a %s job needs filesystems", j.Type)
		}
		if j.Filter, err = zfsrepl.NewFilter(j.Filesystems); err != nil {
			return j, err
		}
		if j.Pruning, err = parsePruning(&r.Pruning, j.Type, j.Line); err != nil {
			return j, err
		}
		if j.Snapshotting, err = parseSnapshotting(&r.Snapshotting, j.Type, j.Line); err != nil {
			return j, err
		}
	}
	return j, nil
}

func (r *rawConnect) parse() (*Connect, error) {
	c := r.Connect
	if c.Address == "" {
		return nil, errors.New("address is empty")
	}
	switch c.Type {
	case "tls":
		if c.CA == "" || c.Cert == "" || c.Key == "" || c.ServerCN == "" {
			return nil, errors.New("tls needs ca, cert, key and server_cn")
		}
	case "tcp":
	default:
		return nil, fmt.Errorf("type %q is not tls or tcp", c.Type)
	}
	if r.DialTimeout != "" {
		d, err := time.ParseDuration(r.DialTimeout)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("dial_timeout: %q is not a positive duration", r.DialTimeout)
		}
		c.DialTimeout = d
	}
	return &c, nil
}

func (s *Serve) validate() error {
	if s.Listen == "" {
		return errors.New("listen is empty")
	}
	switch s.Type {
	case "tls":
		if s.CA == "" || s.Cert == "" || s.Key == "" || len(s.ClientCNs) == 0 {
			return errors.New("tls needs ca, cert, key and client_cns")
		}
		for _, cn := range s.ClientCNs {
			if err := transport.ValidateIdentity(cn); err != nil {
				return fmt.Errorf("client_cns: %w", err)
			}
		}
	case "tcp":
		if len(s.Clients) == 0 {
			return errors.New("tcp needs clients")
		}
	default:
		return fmt.Errorf("type %q is not tls or tcp", s.Type)
	}
	return nil
}

// Job returns the job named name.
func (c *Config) Job(name string) (*Job, error) {
	for i := range c.Jobs {
		if c.Jobs[i].Name == name {
			return &c.Jobs[i], nil
		}
	}
	var names []string
	for _, j := range c.Jobs {
		names = append(names, j.Name)
	}
	return nil, fmt.Errorf("no job %q (jobs: %s)", name, strings.Join(names, ", "))
}

func loadPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no PEM certificate", path)
	}
	return p, nil
}

// Dial returns a push job's client to its sink (connections are made
// lazily). It reads the TLS files; connect.dial_timeout applies unless o
// has its own dialer.
func (j *Job) Dial(o transport.ClientOptions) (*transport.Client, error) {
	c := j.Connect
	if c == nil {
		return nil, fmt.Errorf("job %q has no connect", j.Name)
	}
	if o.DialContext == nil && c.DialTimeout > 0 {
		o.DialContext = (&net.Dialer{Timeout: c.DialTimeout}).DialContext
	}
	switch c.Type {
	case "tcp":
		return transport.NewTCPClient(c.Address, o), nil
	case "tls":
		pool, err := loadPool(c.CA)
		if err != nil {
			return nil, fmt.Errorf("connect.ca: %w", err)
		}
		cert, err := tls.LoadX509KeyPair(c.Cert, c.Key)
		if err != nil {
			return nil, fmt.Errorf("connect.cert/key: %w", err)
		}
		return transport.NewTLSClient(c.Address, transport.TLSClientConfig{CA: pool, Cert: cert, ServerName: c.ServerCN}, o)
	}
	return nil, fmt.Errorf("connect.type %q", c.Type)
}

// SinkServer returns the HTTP server of a sink job (serve it on
// Serve.Listen: with ServeTLS(l, "", "") for tls, Serve(l) for tcp). It
// reads the TLS files.
func (j *Job) SinkServer(s *transport.Server) (srv *http.Server, tlsOn bool, err error) {
	sv := j.Serve
	if sv == nil {
		return nil, false, fmt.Errorf("job %q has no serve", j.Name)
	}
	switch sv.Type {
	case "tcp":
		h, err := transport.NewTCPServer(s, sv.Clients)
		return h, false, err
	case "tls":
		pool, err := loadPool(sv.CA)
		if err != nil {
			return nil, false, fmt.Errorf("serve.ca: %w", err)
		}
		cert, err := tls.LoadX509KeyPair(sv.Cert, sv.Key)
		if err != nil {
			return nil, false, fmt.Errorf("serve.cert/key: %w", err)
		}
		h, err := transport.NewTLSServer(s, transport.TLSServerConfig{CA: pool, Cert: cert, ClientCNs: sv.ClientCNs})
		return h, true, err
	}
	return nil, false, fmt.Errorf("serve.type %q", sv.Type)
}
