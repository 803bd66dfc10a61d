package health_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/taskyard/taskyard/services/kit/health"
	"github.com/taskyard/taskyard/services/kit/logging"
)

func TestReadyz(t *testing.T) {
	t.Parallel()
	s := health.New(logging.Discard())
	ready := errors.New("nats DISCONNECTED")
	s.AddCheck("nats", func(context.Context) error { return ready })

	get := func(path string) (int, map[string]any) {
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		var body map[string]any
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		return rec.Code, body
	}
	code, _ := get("/healthz")
	require.Equal(t, 200, code)
	code, body := get("/readyz")
	require.Equal(t, 503, code)
	require.Equal(t, "nats DISCONNECTED", body["checks"].(map[string]any)["nats"])
	ready = nil
	code, body = get("/readyz")
	require.Equal(t, 200, code)
	require.Equal(t, true, body["ready"])
}
