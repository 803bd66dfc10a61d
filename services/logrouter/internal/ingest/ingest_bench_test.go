package ingest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/taskyard/taskyard/services/logrouter/internal/forward"
	"github.com/taskyard/taskyard/services/logrouter/internal/forward/fwtest"
	"github.com/taskyard/taskyard/services/logrouter/internal/output"
	"github.com/taskyard/taskyard/services/logrouter/internal/pipeline"
	"github.com/taskyard/taskyard/services/logrouter/internal/route"
	"github.com/taskyard/taskyard/services/logrouter/internal/spool"
	"github.com/taskyard/taskyard/services/logrouter/internal/stats"
)

// BenchmarkForwardFrame is the CPU of one 1,000-record PackedForward
// frame from decode to the spool append (fsync off), with the decode
// buffers and encoding arenas reused as the forward server does.
func BenchmarkForwardFrame(b *testing.B) {
	{
		{
			sp, err := spool.Open(spool.Options{Dir: b.TempDir(), NoSync: true, MaxBytes: 1 << 40})
			if err != nil {
				b.Fatal(err)
			}
			defer sp.Close()
			in := &Ingest{Pipeline: pipeline.New(pipeline.Config{}), Routes: &route.Table{NOutputs: 1}, Window: stats.NewWindow(time.Now()),
				Outputs: []*Output{{Name: "o", Spool: sp, Counters: &output.Counters{}}}}
			var es [][]byte
			for i := 0; i < 1000; i++ {
				es = append(es, fwtest.Entry(time.Now(), map[string]any{
					"log":    fmt.Sprintf(`{"level":"info","msg":"processed batch","job":"nightly-report","batch":%d,"rows":%d,"duration_ms":%d,"user":"svc-reporting","request_id":"%016x"}`, i, i*13, i%311, i),
					"source": "stdout", "container_name": "app", "container_id": "3f2a9c1b7e5d4c2a9f1e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a",
					"ecs_cluster": "prod", "ecs_task_arn": "arn:aws:ecs:us-east-1:123456789012:task/prod/0f1e2d3c4b5a69788796a5b4c3d2e1f0",
					"ecs_task_definition": "taskyard-job-nightly-report:42",
				}, fwtest.EventTimeFix))
			}
			frame := fwtest.PackedForward("ecs.app", es, "c", true)
			c := &InputCounters{}
			h := in.Forward(c)
			b.SetBytes(int64(len(frame)))
			var bf forward.Buffers // as the forward server reuses them
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				bf.Reset()
				f, err := forward.DecodeFrameInto(frame, forward.Limits{}, &bf)
				if err != nil {
					b.Fatal(err)
				}
				wait, err := h.Accept(context.Background(), f, len(frame))
				if err != nil {
					b.Fatal(err)
				}
				if err := wait(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
}
