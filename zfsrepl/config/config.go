// Package config reads cairn-zrepl's configuration: a YAML file in zrepl's
// format. It understands the job types `push`, `sink` and `snap`, with their
// `connect` / `serve` transports (`tls`, `tcp`), `filesystems`, `root_fs`,
// `send.encrypted`, `send.bandwidth_limit`, `conflict_resolution.initial_replication`,
// `snapshotting` (periodic with prefix, interval, utc_timestamp_format and
// command hooks; cron, the same with a cron specification for the interval;
// manual), `pruning` (keep_sender / keep_receiver / keep with
// not_replicated, last_n, grid, regex) and `global` (logging to stdout,
// prometheus monitoring, control.sockpath). `replication` and `recv` are
// accepted as zrepl documents them and kept as YAML nodes. Any other key is
// an error naming the key and its line.
package config

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/cairn-backup/cairn/zfsrepl"
	"github.com/cairn-backup/cairn/zfsrepl/transport"
	"github.com/cairn-backup/cairn/zfsrepl/zfs"
)

// Config is a whole configuration file.
type Config struct {
	Global yaml.Node `yaml:"global"`
	Jobs   []Job     `yaml:"jobs"`
}

// Job is one job; which fields apply depends on Type.
type Job struct {
	Name string `yaml:"name"`
	Type string `yaml:"type"` // push, sink (snap and others: see the daemon)

	// push
	Connect            *Connect           `yaml:"connect"`
	Filesystems        map[string]bool    `yaml:"filesystems"`
	Send               Send               `yaml:"send"`
	ConflictResolution ConflictResolution `yaml:"conflict_resolution"`
	Snapshotting       yaml.Node          `yaml:"snapshotting"`
	Pruning            yaml.Node          `yaml:"pruning"`
	Replication        yaml.Node          `yaml:"replication"`

	// sink
	RootFS string    `yaml:"root_fs"`
	Serve  *Serve    `yaml:"serve"`
	Recv   yaml.Node `yaml:"recv"`

	line int
}

// Send is a push job's `send` section.
type Send struct {
	Encrypted bool `yaml:"encrypted"` // raw sends (-w)
	Raw       bool `yaml:"raw"`       // zrepl's send.raw: also -w
	// BandwidthLimit is zrepl's send.bandwidth_limit.
	BandwidthLimit *BandwidthLimit `yaml:"bandwidth_limit"`
}

// BandwidthLimit is zrepl's bandwidth_limit: a token bucket over the bytes
// of the send streams. Sizes are zrepl's ("23.5 MiB", "128KiB", "1000000",
// "-1" for no limit).
type BandwidthLimit struct {
	Max            string `yaml:"max"`
	BucketCapacity string `yaml:"bucket_capacity"`
}

// Limit returns the limit in bytes per second and the bucket's capacity in
// bytes (128 KiB unless set); rate 0 means no limit (a nil b, or max -1).
func (b *BandwidthLimit) Limit() (rate, burst int64, err error) {
	burst = 128 << 10
	if b == nil || b.Max == "" {
		return 0, burst, nil
	}
	if rate, err = ParseSize(b.Max); err != nil {
		return 0, 0, fmt.Errorf("bandwidth_limit.max: %w", err)
	}
	if rate < 0 {
		rate = 0
	}
	if b.BucketCapacity != "" {
		if burst, err = ParseSize(b.BucketCapacity); err != nil || burst <= 0 {
			return 0, 0, fmt.Errorf("bandwidth_limit.bucket_capacity: %q is not a positive size", b.BucketCapacity)
		}
	}
	return rate, burst, nil
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
	if err != nil || !ok || f < 0 {
		return 0, fmt.Errorf("%q is not a size (like 23.5 MiB)", s)
	}
	return int64(f * mul), nil
}

// ConflictResolution is zrepl's `conflict_resolution` section.
type ConflictResolution struct {
	InitialReplication string `yaml:"initial_replication"` // most_recent (default), all, fail
}

// Connect is a push job's `connect` section.
type Connect struct {
	Type        string `yaml:"type"` // tls or tcp
	Address     string `yaml:"address"`
	CA          string `yaml:"ca"`
	Cert        string `yaml:"cert"`
	Key         string `yaml:"key"`
	ServerCN    string `yaml:"server_cn"`
	DialTimeout string `yaml:"dial_timeout"`
}

// Serve is a sink job's `serve` section.
type Serve struct {
	Type           string            `yaml:"type"` // tls or tcp
	Listen         string            `yaml:"listen"`
	CA             string            `yaml:"ca"`
	Cert           string            `yaml:"cert"`
	Key            string            `yaml:"key"`
	ClientCNs      []string          `yaml:"client_cns"`
	Clients        map[string]string `yaml:"clients"` // tcp: IP -> identity
	ListenFreebind bool              `yaml:"listen_freebind"`
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
		return err
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

// Parse parses and validates a configuration.
func Parse(b []byte) (*Config, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&root); err != nil {
		return nil, err
	}
	var c Config
	strict := yaml.NewDecoder(bytes.NewReader(b))
	strict.KnownFields(true)
	if err := strict.Decode(&c); err != nil {
		return nil, userYAMLError(err)
	}
	// Remember each job's line for error messages.
	if len(root.Content) == 1 {
		m := root.Content[0]
		for i := 0; i+1 < len(m.Content); i += 2 {
			if m.Content[i].Value == "jobs" && m.Content[i+1].Kind == yaml.SequenceNode {
				for j, n := range m.Content[i+1].Content {
					if j < len(c.Jobs) {
						c.Jobs[j].line = n.Line
					}
				}
			}
		}
	}
	if _, err := c.ParseGlobal(); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for i := range c.Jobs {
		j := &c.Jobs[i]
		if seen[j.Name] {
			return nil, fmt.Errorf("line %d: job name %q used twice", j.line, j.Name)
		}
		seen[j.Name] = true
		if err := j.validate(); err != nil {
			return nil, fmt.Errorf("line %d: job %q: %w", j.line, j.Name, err)
		}
	}
	return &c, nil
}

func (j *Job) validate() error {
	if err := zfsrepl.ValidateJobName(j.Name); err != nil {
		return err
	}
	switch j.Type {
	case "push":
		if j.Connect == nil {
			return errors.New("a push job needs connect")
		}
		if err := j.Connect.validate(); err != nil {
			return fmt.Errorf("connect: %w", err)
		}
		if len(j.Filesystems) == 0 {
			return errors.New("a push job needs filesystems")
		}
		if _, err := zfsrepl.NewFilter(j.Filesystems); err != nil {
			return err
		}
		if _, _, err := j.Send.BandwidthLimit.Limit(); err != nil {
			return fmt.Errorf("send.%w", err)
		}
		switch j.ConflictResolution.InitialReplication {
		case "", "most_recent", "all", "fail":
		default:
			return fmt.Errorf("conflict_resolution.initial_replication: %q is not most_recent, all or fail", j.ConflictResolution.InitialReplication)
		}
	case "sink":
		if err := zfs.ValidateFilesystem(j.RootFS); err != nil {
			return fmt.Errorf("root_fs: %w", err)
		}
		if j.Serve == nil {
			return errors.New("a sink job needs serve")
		}
		if err := j.Serve.validate(); err != nil {
			return fmt.Errorf("serve: %w", err)
		}
	case "snap":
		if len(j.Filesystems) == 0 {
			return errors.New("a snap job needs filesystems")
		}
		if _, err := zfsrepl.NewFilter(j.Filesystems); err != nil {
			return err
		}
	case "source", "pull":
		return fmt.Errorf("job type %q is not supported (push, sink, snap)", j.Type)
	default:
		return fmt.Errorf("unknown job type %q", j.Type)
	}
	switch j.Type {
	case "push", "snap":
		if _, err := j.ParsePruning(); err != nil {
			return err
		}
		if _, err := j.ParseSnapshotting(); err != nil {
			return err
		}
	}
	return nil
}

func (c *Connect) validate() error {
	if c.Address == "" {
		return errors.New("address is empty")
	}
	switch c.Type {
	case "tls":
		if c.CA == "" || c.Cert == "" || c.Key == "" || c.ServerCN == "" {
			return errors.New("tls needs ca, cert, key and server_cn")
		}
	case "tcp":
	default:
		return fmt.Errorf("type %q is not tls or tcp", c.Type)
	}
	return nil
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

// PlanConfig returns the planner settings of a push job.
func (j *Job) PlanConfig() zfsrepl.PlanConfig {
	return zfsrepl.PlanConfig{
		Initial: zfsrepl.InitialReplication(j.ConflictResolution.InitialReplication),
		Raw:     j.Send.Encrypted || j.Send.Raw,
	}
}

// Filter returns a push job's filesystem filter.
func (j *Job) Filter() (*zfsrepl.Filter, error) { return zfsrepl.NewFilter(j.Filesystems) }

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

// Dial returns a push job's client to its sink (connections are made lazily).
func (j *Job) Dial(o transport.ClientOptions) (*transport.Client, error) {
	c := j.Connect
	if c == nil {
		return nil, fmt.Errorf("job %q has no connect", j.Name)
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
// Serve.Listen: with ServeTLS(l, "", "") for tls, Serve(l) for tcp).
func (j *Job) SinkServer(s *transport.Server) (srv *http.Server, tlsOn bool, err error) {
	sv := j.Serve
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
