package telemetry_test

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/taskyard/taskyard/services/kit/telemetry"
)

func TestPrometheusExposition(t *testing.T) {
	t.Parallel()
	tel, err := telemetry.New(context.Background(), telemetry.Options{Service: "scheduler", Instance: "i1",
		Env: func(string) (string, bool) { return "", false }})
	require.NoError(t, err)
	defer tel.Shutdown(context.Background())

	c, err := tel.Meter.Meter("test").Int64Counter("taskyard_fires")
	require.NoError(t, err)
	c.Add(context.Background(), 3)

	rec := httptest.NewRecorder()
	tel.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	require.NoError(t, err)
	fam, ok := fams["taskyard_fires_total"]
	require.True(t, ok, string(body))
	require.EqualValues(t, 3, fam.GetMetric()[0].GetCounter().GetValue())
}
