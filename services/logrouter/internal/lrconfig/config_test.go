package lrconfig

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestParseGoodWithEnvAndDefaults(t *testing.T) {
	t.Parallel()
	f, err := Parse("lr.yml", []byte(`
inputs:
  forward:
    sharedKey: ${KEY}
pipeline:
  onlyJSON: drop
  maxRecordBytes: 512KiB
outputs:
  - name: dd
    type: datadog
    datadog: {apiKey: "${DD_API_KEY}", site: "${DD_SITE:-datadoghq.eu}"}
  - name: archive
    type: s3
    s3: {bucket: logs, flushAge: 1m}
  - name: local
    type: file
    file: {path: /var/log/x.ndjson}
  - name: cached
    type: file
    file: {path: /var/log/y.ndjson, directIO: false}
routes:
  - match: {cluster: "prod-*", level: "error"}
    outputs: [dd, archive]
`), env(map[string]string{"KEY": "k", "DD_API_KEY": "abc"}))
	require.NoError(t, err)
	f.Defaults()
	require.Equal(t, "k", f.Inputs.Forward.SharedKey)
	require.Equal(t, ":24224", f.Inputs.Forward.Listen)
	require.Equal(t, Size(512<<10), f.Pipeline.MaxRecordBytes)
	require.Equal(t, "abc", f.Outputs[0].Datadog.APIKey)
	require.Equal(t, "datadoghq.eu", f.Outputs[0].Datadog.Site)
	require.Equal(t, Duration(time.Minute), f.Outputs[1].S3.FlushAge)
	require.Equal(t, Size(64<<20), f.Outputs[1].S3.FlushBytes)
	require.Equal(t, "{cluster}/{service}/%Y/%m/%d/%H/{unique}.ndjson.gz", f.Outputs[1].S3.KeyTemplate)
	require.Equal(t, "block", f.Outputs[1].WhenFull)
	require.Equal(t, Size(100<<20), f.Outputs[2].File.MaxBytes)
	require.True(t, *f.Outputs[2].File.DirectIO, "direct I/O by default")
	require.False(t, *f.Outputs[3].File.DirectIO)
}

func TestParseErrorsNameFileLineField(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"unset env var", "inputs:\n  forward:\n    sharedKey: ${NOPE}\noutputs:\n  - {name: o, type: stdout}\n",
			[]string{"lr.yml:3: inputs.forward.sharedKey: environment variable NOPE is not set"}},
		{"unknown field", "inputs:\n  forward:\n    lisen: x\n", []string{"lr.yml:3: inputs.forward.lisen: unknown field"}},
		{"bad size", "inputs:\n  forward:\n    maxFrameBytes: lots\n", []string{`lr.yml:3: inputs.forward.maxFrameBytes: "lots" is not a size`}},
		{"bad bool", "outputs:\n  - name: f\n    type: file\n    file: {path: /x, directIO: maybe}\n", []string{`lr.yml:4: outputs[0].file.directIO: "maybe" is not true or false`}},
		{"bad number", "outputs:\n  - name: f\n    type: file\n    file:\n      path: /x\n      maxFiles: few\n", []string{`lr.yml:6: outputs[0].file.maxFiles: "few" is not a whole number`}},
		{"many problems", `inputs:
  forward: {}
pipeline:
  onlyJSON: maybe
  redact:
    - pattern: "("
outputs:
  - name: a
    type: s3
    s3: {}
  - name: a
    type: kafka
  - name: f
    type: file
routes:
  - match: {service: "["}
    outputs: [nope]
`, []string{
			`lr.yml:4: pipeline.onlyJSON: "maybe": want keep or drop`,
			`lr.yml:6: pipeline.redact[0].pattern: not a valid regular expression`,
			`lr.yml:10: outputs[0].s3.bucket: required`,
			`lr.yml:11: outputs[1].name: "a" is used by another output`,
			`lr.yml:12: outputs[1].type: "kafka": want s3, firehose, datadog, file or stdout`,
			`lr.yml:13: outputs[2].file.path: required`,
			`lr.yml:16: routes[0].match.service: "[" is not a valid glob`,
			`lr.yml:17: routes[0].outputs[0]: no output named "nope"`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("lr.yml", []byte(tc.yaml), env(nil))
			require.Error(t, err)
			for _, w := range tc.want {
				require.Contains(t, err.Error(), w)
			}
			require.Equal(t, len(tc.want), strings.Count(err.Error(), "\n")+1, err.Error())
		})
	}
}

func TestParseSize(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{"10": 10, "2KiB": 2048, "64MiB": 64 << 20, "1GiB": 1 << 30, "5MB": 5e6, "7 B": 7} {
		got, err := ParseSize(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	_, err := ParseSize("-1")
	require.Error(t, err)
}

func TestExampleFileIsValid(t *testing.T) {
	t.Parallel()
	f, err := Load("../../../../examples/logrouter.yml", env(map[string]string{"DD_API_KEY": "k"}))
	require.NoError(t, err)
	require.Len(t, f.Outputs, 3)
	_, err = Load("../../../../examples/logrouter.yml", env(nil))
	require.ErrorContains(t, err, "logrouter.yml:")
	require.ErrorContains(t, err, "outputs[1].datadog.apiKey: environment variable DD_API_KEY is not set")
}
