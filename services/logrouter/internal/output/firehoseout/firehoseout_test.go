package firehoseout

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/firehose"
	"github.com/stretchr/testify/require"

	"github.com/taskyard/taskyard/services/logrouter/internal/event"
	"github.com/taskyard/taskyard/services/logrouter/internal/output"
	"github.com/taskyard/taskyard/services/logrouter/internal/output/outputtest"
)

// fakeFirehose speaks Firehose's awsJson1_1 PutRecordBatch and checks the
// service limits on every request.
type fakeFirehose struct {
	t  *testing.T
	mu sync.Mutex
	// got[stream] are the records accepted.
	got      map[string][]string
	attempts map[string]int // per record: times seen
	calls    int
	// failFirst makes the first attempt of every record whose text
	// contains "flaky" fail with an ErrorCode.
	failFirst bool
	missing   string // a stream that does not exist
	maxBatch  int    // most records seen in one request
	maxBytes  int    // most bytes seen in one request
}

func (f *fakeFirehose) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	require.Equal(f.t, "Firehose_20150804.PutRecordBatch", r.Header.Get("X-Amz-Target"))
	require.Equal(f.t, "application/x-amz-json-1.1", r.Header.Get("Content-Type"))
	require.Contains(f.t, r.Header.Get("Authorization"), "AWS4-HMAC-SHA256")
	var in struct {
		DeliveryStreamName string
		Records            []struct{ Data []byte }
	}
	body, _ := io.ReadAll(r.Body)
	require.NoError(f.t, json.Unmarshal(body, &in))
	if in.DeliveryStreamName == f.missing {
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.WriteHeader(400)
		fmt.Fprintf(w, `{"__type":"ResourceNotFoundException","message":"Firehose %s not found"}`, in.DeliveryStreamName)
		return
	}
	require.LessOrEqual(f.t, len(in.Records), 500, "PutRecordBatch takes at most 500 records")
	total := 0
	type resp struct {
		RecordId     string `json:",omitempty"`
		ErrorCode    string `json:",omitempty"`
		ErrorMessage string `json:",omitempty"`
	}
	out := struct {
		FailedPutCount   int
		Encrypted        bool
		RequestResponses []resp
	}{}
	for i, rec := range in.Records {
		require.LessOrEqual(f.t, len(rec.Data), 1000*1024, "record limit")
		require.True(f.t, strings.HasSuffix(string(rec.Data), "\n"), "records are newline-terminated")
		total += len(rec.Data)
		s := string(rec.Data)
		f.attempts[s]++
		if f.failFirst && strings.Contains(s, "flaky") && f.attempts[s] == 1 {
			out.FailedPutCount++
			out.RequestResponses = append(out.RequestResponses, resp{ErrorCode: "ServiceUnavailableException", ErrorMessage: "Slow down."})
			continue
		}
		f.got[in.DeliveryStreamName] = append(f.got[in.DeliveryStreamName], s)
		out.RequestResponses = append(out.RequestResponses, resp{RecordId: fmt.Sprint("id-", i)})
	}
	require.LessOrEqual(f.t, total, 4<<20, "PutRecordBatch takes at most 4 MiB")
	f.maxBatch = max(f.maxBatch, len(in.Records))
	f.maxBytes = max(f.maxBytes, total)
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	_ = json.NewEncoder(w).Encode(out)
}

func client(url string) *firehose.Client {
	return firehose.New(firehose.Options{
		BaseEndpoint: aws.String(url), Region: "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", ""),
	})
}

func TestPutRecordBatchLimitsAndPartialRetry(t *testing.T) {
	t.Parallel()
	f := &fakeFirehose{t: t, got: map[string][]string{}, attempts: map[string]int{}, failFirst: true, missing: "prod_gone"}
	srv := httptest.NewServer(f)
	defer srv.Close()
	var evs []event.Event
	for i := 0; i < 1200; i++ {
		svc := "api"
		if i%3 == 0 {
			svc = "worker"
		}
		log := fmt.Sprintf("line %04d %s", i, strings.Repeat("x", 9985)) // 10,000 B: 419 fit in 4 MiB
		if i%10 == 0 {
			log = "flaky " + log
		}
		evs = append(evs, event.Event{Time: time.Now(), Cluster: "prod", Service: svc, Level: "info", Log: log})
	}
	evs = append(evs, event.Event{Time: time.Now(), Cluster: "prod", Service: "gone", Log: "to a stream that does not exist"})
	evs = append(evs, event.Event{Time: time.Now(), Cluster: "prod", Service: "api", Log: strings.Repeat("y", 1100<<10)})
	var c output.Counters
	h := outputtest.Start(t, &Sink{Client: client(srv.URL), StreamTemplate: "{cluster}_{service}", Format: event.FormatRaw, Counters: &c}, &c, 5000, evs)
	require.Eventually(t, func() bool { return h.Spool.Empty() }, 20*time.Second, 10*time.Millisecond)

	f.mu.Lock()
	defer f.mu.Unlock()
	require.Equal(t, 419, f.maxBatch, "batches are cut at 4 MiB before 500 records")
	require.Greater(t, f.maxBytes, 4<<20-10_100)
	require.Len(t, f.got["prod_api"], 800)
	require.Len(t, f.got["prod_worker"], 400)
	for s, n := range f.attempts {
		if strings.HasPrefix(s, "flaky") {
			require.Equal(t, 2, n, "failed entries are retried once more")
		} else {
			require.Equal(t, 1, n, "entries without an ErrorCode are not resent")
		}
	}
	require.Equal(t, int64(1200), c.ProcRecords.Load())
	require.Equal(t, int64(2), c.DeadLettered.Load(), "missing stream and oversize record are dead-lettered")
	require.Positive(t, c.Retries.Load())
	require.Equal(t, int64(120), c.RetriedRecords.Load())
}
