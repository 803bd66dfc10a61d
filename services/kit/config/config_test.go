package config_test

import (
	"flag"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskyard/taskyard/services/kit/config"
)

type cfg struct {
	URL   string
	N     int
	D     time.Duration
	B     bool
	Items []string
}

func bind(env map[string]string) (*config.Flags, *cfg) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f := config.New(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	c := &cfg{}
	f.String(&c.URL, "nats-url", "nats://127.0.0.1:4222", "NATS server URL")
	f.Int(&c.N, "count", 3, "count")
	f.Duration(&c.D, "lease-ttl", 10*time.Second, "lease")
	f.Bool(&c.B, "verbose", false, "verbose")
	f.List(&c.Items, "clusters", []string{"a"}, "clusters")
	return f, c
}

func TestPrecedence(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want cfg
	}{
		{"defaults", nil, nil, cfg{"nats://127.0.0.1:4222", 3, 10 * time.Second, false, []string{"a"}}},
		{"env", map[string]string{"TASKYARD_NATS_URL": "nats://e:1", "TASKYARD_COUNT": "7", "TASKYARD_LEASE_TTL": "3s", "TASKYARD_VERBOSE": "true", "TASKYARD_CLUSTERS": "x, y"},
			nil, cfg{"nats://e:1", 7, 3 * time.Second, true, []string{"x", "y"}}},
		{"flag beats env", map[string]string{"TASKYARD_NATS_URL": "nats://e:1"}, []string{"--nats-url", "nats://f:2", "--clusters", "p", "--clusters", "q"},
			cfg{"nats://f:2", 3, 10 * time.Second, false, []string{"p", "q"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f, c := bind(tc.env)
			require.NoError(t, f.Parse(tc.args))
			require.Equal(t, tc.want, *c)
		})
	}
}

func TestBadEnvNamesVariable(t *testing.T) {
	t.Parallel()
	f, _ := bind(map[string]string{"TASKYARD_COUNT": "many", "TASKYARD_LEASE_TTL": "soon"})
	err := f.Parse(nil)
	require.ErrorContains(t, err, `TASKYARD_COUNT="many"`)
	require.ErrorContains(t, err, `TASKYARD_LEASE_TTL="soon"`)
}

func TestUsageNamesEnv(t *testing.T) {
	t.Parallel()
	f, _ := bind(nil)
	require.Contains(t, f.FlagSet().Lookup("nats-url").Usage, "(env TASKYARD_NATS_URL)")
}

func TestProblems(t *testing.T) {
	t.Parallel()
	var p config.Problems
	require.NoError(t, p.Err())
	p.Check(false, "nats-url: must not be empty")
	p.Check(true, "never")
	p.Addf("lease-ttl: %s is below 1s", "10ms")
	err := p.Err()
	require.EqualError(t, err, "invalid configuration:\n  nats-url: must not be empty\n  lease-ttl: 10ms is below 1s")
}
