// Package lrconfig reads the logrouter's YAML configuration file: inputs,
// pipeline, routes, outputs and spool. ${VAR} and ${VAR:-default} in any
// value are replaced from the environment (for secrets such as API keys),
// and every problem is reported with file:line and the field's path.
package lrconfig

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/taskyard/taskyard/services/logrouter/internal/route"
)

// File is the whole configuration.
type File struct {
	Inputs   Inputs   `yaml:"inputs"`
	Pipeline Pipeline `yaml:"pipeline"`
	Routes   []Route  `yaml:"routes"`
	Outputs  []Output `yaml:"outputs"`
	Spool    Spool    `yaml:"spool"`
}

// Inputs lists the enabled inputs.
type Inputs struct {
	Forward *Forward   `yaml:"forward"`
	HTTP    *HTTPInput `yaml:"http"`
}

// Forward is the Fluent Forward input.
type Forward struct {
	// Listen is host:port (default :24224).
	Listen    string `yaml:"listen"`
	SharedKey string `yaml:"sharedKey"`
	Users     []User `yaml:"users"`
	// Hostname is sent in PONG (default: the OS host name).
	Hostname string `yaml:"hostname"`
	TLS      *TLS   `yaml:"tls"`
	// MaxFrameBytes bounds one message on the wire (default 16MiB).
	MaxFrameBytes Size `yaml:"maxFrameBytes"`
	// MemoryLimit bounds frames in flight over all connections (default 64MiB).
	MemoryLimit Size `yaml:"memoryLimit"`
	// IdleTimeout closes silent connections (default 5m).
	IdleTimeout Duration `yaml:"idleTimeout"`
	// UDPHeartbeat answers fluentd's UDP heartbeats on the same port
	// (default true).
	UDPHeartbeat *bool `yaml:"udpHeartbeat"`
}

// User is a forward handshake user.
type User struct {
	Username string `yaml:"username"`
	Password string `yaml:"password"`
}

// TLS names a PEM certificate and key.
type TLS struct {
	CertFile string `yaml:"certFile"`
	KeyFile  string `yaml:"keyFile"`
}

// HTTPInput is the HTTP NDJSON input.
type HTTPInput struct {
	// Listen is host:port (default :8888).
	Listen string `yaml:"listen"`
}

// Pipeline configures record processing.
type Pipeline struct {
	// OnlyJSON is keep (default) or drop: what to do with non-JSON lines.
	OnlyJSON string `yaml:"onlyJSON"`
	// MaxRecordBytes is the line size limit (default 1MiB).
	MaxRecordBytes Size `yaml:"maxRecordBytes"`
	// StaticTags are added to Datadog ddtags (key:value).
	StaticTags     []string    `yaml:"staticTags"`
	Redact         []Redaction `yaml:"redact"`
	DefaultCluster string      `yaml:"defaultCluster"`
	DefaultService string      `yaml:"defaultService"`
}

// Redaction is a regular expression and its replacement.
type Redaction struct {
	Pattern string `yaml:"pattern"`
	Mask    string `yaml:"mask"`
}

// Route sends matching records to outputs.
type Route struct {
	Match   Match    `yaml:"match"`
	Outputs []string `yaml:"outputs"`
}

// Match holds globs (path.Match syntax, alternatives separated by '|');
// empty matches everything.
type Match struct {
	Cluster   string `yaml:"cluster"`
	Service   string `yaml:"service"`
	Container string `yaml:"container"`
	Level     string `yaml:"level"`
}

// Output is one destination.
type Output struct {
	Name string `yaml:"name"`
	// Type: s3, firehose, datadog, file, stdout.
	Type string `yaml:"type"`
	// Format: json (default) or raw.
	Format string `yaml:"format"`
	// WhenFull: block (default) or drop_newest.
	WhenFull string `yaml:"whenFull"`
	// SpoolMaxBytes overrides spool.maxBytes for this output.
	SpoolMaxBytes Size     `yaml:"spoolMaxBytes"`
	Retry         Retry    `yaml:"retry"`
	File          *FileOut `yaml:"file"`
	S3            *S3Out   `yaml:"s3"`
	Firehose      *FHOut   `yaml:"firehose"`
	Datadog       *DDOut   `yaml:"datadog"`
}

// Retry configures jittered exponential backoff.
type Retry struct {
	// Initial delay (default 1s) and Max delay (default 30s).
	Initial Duration `yaml:"initial"`
	Max     Duration `yaml:"max"`
	// Limit of attempts per batch; 0 retries forever. Batches past the
	// limit go to the dead-letter file.
	Limit int `yaml:"limit"`
}

// FileOut writes rotating NDJSON files.
type FileOut struct {
	Path     string `yaml:"path"`
	MaxBytes Size   `yaml:"maxBytes"`
	MaxFiles int    `yaml:"maxFiles"`
	Sync     bool   `yaml:"sync"`
	// DirectIO: see output.File.DirectIO; nil until defaults are applied
	// (true).
	DirectIO *bool `yaml:"directIO"`
}

// S3Out archives gzip NDJSON objects.
type S3Out struct {
	Bucket         string   `yaml:"bucket"`
	Region         string   `yaml:"region"`
	Endpoint       string   `yaml:"endpoint"`
	ForcePathStyle bool     `yaml:"forcePathStyle"`
	KeyTemplate    string   `yaml:"keyTemplate"`
	FlushBytes     Size     `yaml:"flushBytes"`
	FlushAge       Duration `yaml:"flushAge"`
	PartBytes      Size     `yaml:"partBytes"`
	// BufferLimit bounds the compressed bytes held for open objects.
	BufferLimit Size `yaml:"bufferLimit"`
}

// FHOut sends to Kinesis Data Firehose.
type FHOut struct {
	StreamTemplate string `yaml:"streamTemplate"`
	Region         string `yaml:"region"`
	Endpoint       string `yaml:"endpoint"`
}

// DDOut sends to the Datadog HTTP logs intake v2.
type DDOut struct {
	APIKey   string `yaml:"apiKey"`
	Site     string `yaml:"site"`
	URL      string `yaml:"url"`
	Source   string `yaml:"source"`
	Hostname string `yaml:"hostname"`
}

// Spool configures the per-output spools.
type Spool struct {
	Dir          string `yaml:"dir"`
	MaxBytes     Size   `yaml:"maxBytes"`
	SegmentBytes Size   `yaml:"segmentBytes"`
}

// Size is a byte count written as 1048576, 512KiB, 64MiB, 1GiB (KB/MB/GB
// are decimal).
type Size int64

// UnmarshalYAML reads a size.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseSize(n.Value)
	if err != nil {
		return err
	}
	*s = Size(v)
	return nil
}

// ParseSize reads a size.
func ParseSize(v string) (int64, error) {
	v = strings.TrimSpace(v)
	units := []struct {
		suf string
		m   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if n, ok := strings.CutSuffix(v, u.suf); ok {
			v, mult = strings.TrimSpace(n), u.m
			break
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size (e.g. 1048576, 512KiB, 64MiB, 1GiB)", v)
	}
	return n * mult, nil
}

// Duration is a Go duration string (5m, 200ms).
type Duration time.Duration

// UnmarshalYAML reads a duration.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("%q is not a duration (e.g. 200ms, 30s, 5m)", n.Value)
	}
	*d = Duration(v)
	return nil
}

// Error is one problem with its place.
type Error struct {
	File  string
	Line  int
	Field string
	Msg   string
}

func (e Error) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s:%d: %s: %s", e.File, e.Line, e.Field, e.Msg)
}

// Errors is every problem of a file.
type Errors []Error

func (es Errors) Error() string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// Load reads and validates a configuration file.
func Load(file string, env func(string) (string, bool)) (*File, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read logrouter config: %w", err)
	}
	return Parse(file, b, env)
}

// Parse reads and validates configuration text; file names it in errors.
func Parse(file string, b []byte, env func(string) (string, bool)) (*File, error) {
	if env == nil {
		env = os.LookupEnv
	}
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, yamlErr(file, err)
	}
	if len(root.Content) == 0 {
		return nil, Errors{{File: file, Line: 1, Msg: "the file is empty"}}
	}
	var errs Errors
	substitute(file, root.Content[0], "", env, &errs)
	if len(errs) > 0 {
		return nil, errs
	}
	var f File
	if err := decodeStrict(root.Content[0], &f); err != nil {
		return nil, yamlErr(file, err)
	}
	v := validator{file: file, root: root.Content[0]}
	v.validate(&f)
	if len(v.errs) > 0 {
		return nil, v.errs
	}
	return &f, nil
}

// decodeStrict decodes n into out refusing unknown fields.
func decodeStrict(n *yaml.Node, out any) error {
	// Decoding from the node keeps the original line numbers; unknown
	// fields are found by checkKnown.
	if err := checkKnown(n, out); err != nil {
		return err
	}
	if err := n.Decode(out); err != nil {
		return err
	}
	return nil
}

var lineRe = regexp.MustCompile(`line (\d+): (.*)`)

func yamlErr(file string, err error) error {
	var fe *FieldError
	if errors.As(err, &fe) {
		return Errors{{File: file, Line: fe.Line, Field: fe.Path, Msg: fe.Msg}}
	}
	var te *yaml.TypeError
	if errors.As(err, &te) {
		var es Errors
		for _, m := range te.Errors {
			if sm := lineRe.FindStringSubmatch(m); sm != nil {
				l, _ := strconv.Atoi(sm[1])
				es = append(es, Error{File: file, Line: l, Msg: sm[2]})
			} else {
				es = append(es, Error{File: file, Msg: m})
			}
		}
		return es
	}
	if sm := lineRe.FindStringSubmatch(err.Error()); sm != nil {
		l, _ := strconv.Atoi(sm[1])
		return Errors{{File: file, Line: l, Msg: sm[2]}}
	}
	return Errors{{File: file, Msg: err.Error()}}
}

var envRe = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// substitute replaces ${VAR} and ${VAR:-default} in scalar values.
func substitute(file string, n *yaml.Node, field string, env func(string) (string, bool), errs *Errors) {
	switch n.Kind {
	case yaml.ScalarNode:
		if !strings.Contains(n.Value, "${") {
			return
		}
		n.Value = envRe.ReplaceAllStringFunc(n.Value, func(m string) string {
			sm := envRe.FindStringSubmatch(m)
			if v, ok := env(sm[1]); ok && v != "" {
				return v
			}
			if sm[2] != "" {
				return sm[3]
			}
			*errs = append(*errs, Error{File: file, Line: n.Line, Field: field, Msg: "environment variable " + sm[1] + " is not set"})
			return ""
		})
		if n.Tag != "!!str" {
			n.Tag = "" // re-resolve the type of the substituted value
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			substitute(file, n.Content[i+1], join(field, n.Content[i].Value), env, errs)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			substitute(file, c, fmt.Sprintf("%s[%d]", field, i), env, errs)
		}
	}
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "." + b
}

// Defaults fills unset values.
func (f *File) Defaults() {
	if f.Inputs.Forward != nil && f.Inputs.Forward.Listen == "" {
		f.Inputs.Forward.Listen = ":24224"
	}
	if f.Inputs.HTTP != nil && f.Inputs.HTTP.Listen == "" {
		f.Inputs.HTTP.Listen = ":8888"
	}
	if f.Spool.Dir == "" {
		f.Spool.Dir = "/var/lib/taskyard/logrouter"
	}
	if f.Spool.MaxBytes == 0 {
		f.Spool.MaxBytes = 1 << 30
	}
	if f.Pipeline.MaxRecordBytes == 0 {
		f.Pipeline.MaxRecordBytes = 1 << 20
	}
	for i := range f.Outputs {
		o := &f.Outputs[i]
		if o.Format == "" {
			o.Format = "json"
		}
		if o.WhenFull == "" {
			o.WhenFull = "block"
		}
		if o.SpoolMaxBytes == 0 {
			o.SpoolMaxBytes = f.Spool.MaxBytes
		}
		if o.Retry.Initial == 0 {
			o.Retry.Initial = Duration(time.Second)
		}
		if o.Retry.Max == 0 {
			o.Retry.Max = Duration(30 * time.Second)
		}
		if o.S3 != nil {
			if o.S3.KeyTemplate == "" {
				o.S3.KeyTemplate = "{cluster}/{service}/%Y/%m/%d/%H/{unique}.ndjson.gz"
			}
			if o.S3.FlushBytes == 0 {
				o.S3.FlushBytes = 64 << 20
			}
			if o.S3.FlushAge == 0 {
				o.S3.FlushAge = Duration(5 * time.Minute)
			}
			if o.S3.PartBytes == 0 {
				o.S3.PartBytes = 8 << 20
			}
			if o.S3.BufferLimit == 0 {
				o.S3.BufferLimit = 64 << 20
			}
		}
		if o.File != nil {
			if o.File.MaxBytes == 0 {
				o.File.MaxBytes = 100 << 20
			}
			if o.File.MaxFiles == 0 {
				o.File.MaxFiles = 5
			}
			if o.File.DirectIO == nil {
				on := true
				o.File.DirectIO = &on
			}
		}
		if o.Datadog != nil {
			if o.Datadog.Site == "" {
				o.Datadog.Site = "datadoghq.com"
			}
			if o.Datadog.Source == "" {
				o.Datadog.Source = "taskyard"
			}
		}
		if o.Firehose != nil && o.Firehose.StreamTemplate == "" {
			o.Firehose.StreamTemplate = "{cluster}_{service}"
		}
	}
}

// NameRe is what an output name must match.
var NameRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_-]{0,63}$`)

type validator struct {
	file string
	root *yaml.Node
	errs Errors
}

// at records a problem at the node of path (a dotted path with [i]
// indexes); the line is the closest existing node's.
func (v *validator) at(field, format string, args ...any) {
	v.errs = append(v.errs, Error{File: v.file, Line: lineOf(v.root, field), Field: field, Msg: fmt.Sprintf(format, args...)})
}

var segRe = regexp.MustCompile(`([^.\[\]]+)|\[(\d+)\]`)

func lineOf(n *yaml.Node, field string) int {
	line := n.Line
	for _, m := range segRe.FindAllStringSubmatch(field, -1) {
		var next *yaml.Node
		if m[2] != "" {
			i, _ := strconv.Atoi(m[2])
			if n.Kind == yaml.SequenceNode && i < len(n.Content) {
				next = n.Content[i]
			}
		} else if n.Kind == yaml.MappingNode {
			for k := 0; k+1 < len(n.Content); k += 2 {
				if n.Content[k].Value == m[1] {
					next = n.Content[k+1]
				}
			}
		}
		if next == nil {
			return line
		}
		n, line = next, next.Line
	}
	return line
}

func (v *validator) validate(f *File) {
	if f.Inputs.Forward == nil && f.Inputs.HTTP == nil {
		v.at("inputs", "enable at least one input (forward or http)")
	}
	if fw := f.Inputs.Forward; fw != nil {
		if len(fw.Users) > 0 && fw.SharedKey == "" {
			v.at("inputs.forward.users", "user auth needs sharedKey too (it is part of the same handshake)")
		}
		for i, u := range fw.Users {
			if u.Username == "" || u.Password == "" {
				v.at(fmt.Sprintf("inputs.forward.users[%d]", i), "username and password are both required")
			}
		}
		if fw.TLS != nil && (fw.TLS.CertFile == "" || fw.TLS.KeyFile == "") {
			v.at("inputs.forward.tls", "certFile and keyFile are both required")
		}
	}
	switch f.Pipeline.OnlyJSON {
	case "", "keep", "drop":
	default:
		v.at("pipeline.onlyJSON", "%q: want keep or drop", f.Pipeline.OnlyJSON)
	}
	for i, t := range f.Pipeline.StaticTags {
		if !strings.Contains(t, ":") {
			v.at(fmt.Sprintf("pipeline.staticTags[%d]", i), "%q: want key:value", t)
		}
	}
	for i, r := range f.Pipeline.Redact {
		if _, err := regexp.Compile(r.Pattern); err != nil || r.Pattern == "" {
			v.at(fmt.Sprintf("pipeline.redact[%d].pattern", i), "not a valid regular expression: %v", err)
		}
	}
	names := map[string]bool{}
	if len(f.Outputs) == 0 {
		v.at("outputs", "configure at least one output")
	}
	for i, o := range f.Outputs {
		p := fmt.Sprintf("outputs[%d]", i)
		if !NameRe.MatchString(o.Name) {
			v.at(p+".name", "%q: want letters, digits, '_' or '-' (1-64)", o.Name)
		} else if names[o.Name] {
			v.at(p+".name", "%q is used by another output", o.Name)
		}
		names[o.Name] = true
		switch o.Format {
		case "", "json", "raw":
		default:
			v.at(p+".format", "%q: want json or raw", o.Format)
		}
		switch o.WhenFull {
		case "", "block", "drop_newest":
		default:
			v.at(p+".whenFull", "%q: want block or drop_newest", o.WhenFull)
		}
		if o.Retry.Limit < 0 {
			v.at(p+".retry.limit", "must not be negative")
		}
		want := map[string]bool{"s3": o.S3 != nil, "firehose": o.Firehose != nil, "datadog": o.Datadog != nil, "file": o.File != nil}
		for typ, set := range want {
			if set && typ != o.Type {
				v.at(p+"."+typ, "only an output of type %s takes this section", typ)
			}
		}
		switch o.Type {
		case "stdout":
		case "file":
			if o.File == nil || o.File.Path == "" {
				v.at(p+".file.path", "required")
			}
			if o.File != nil && o.File.MaxFiles < 0 {
				v.at(p+".file.maxFiles", "must not be negative")
			}
		case "s3":
			if o.S3 == nil || o.S3.Bucket == "" {
				v.at(p+".s3.bucket", "required")
			}
			if o.S3 != nil && o.S3.PartBytes != 0 && o.S3.PartBytes < 5<<20 {
				v.at(p+".s3.partBytes", "S3 multipart parts are at least 5MiB")
			}
		case "firehose":
			if o.Firehose == nil {
				v.at(p+".firehose", "required for type firehose")
			}
		case "datadog":
			if o.Datadog == nil || o.Datadog.APIKey == "" {
				v.at(p+".datadog.apiKey", "required (use ${DD_API_KEY})")
			}
		case "":
			v.at(p+".type", "required: s3, firehose, datadog, file or stdout")
		default:
			v.at(p+".type", "%q: want s3, firehose, datadog, file or stdout", o.Type)
		}
	}
	for i, r := range f.Routes {
		p := fmt.Sprintf("routes[%d]", i)
		for _, g := range []struct{ k, v string }{{"cluster", r.Match.Cluster}, {"service", r.Match.Service}, {"container", r.Match.Container}, {"level", r.Match.Level}} {
			if !route.Valid(g.v) {
				v.at(p+".match."+g.k, "%q is not a valid glob", g.v)
			}
		}
		if len(r.Outputs) == 0 {
			v.at(p+".outputs", "name at least one output")
		}
		for j, n := range r.Outputs {
			if !names[n] {
				v.at(fmt.Sprintf("%s.outputs[%d]", p, j), "no output named %q", n)
			}
		}
	}
}
