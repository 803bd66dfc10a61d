// Package awstest holds httptest servers speaking the AWS wire protocols
// exitwatch uses (SQS JSON 1.0, ECS JSON 1.1), for tests that drive the
// real aws-sdk-go-v2 clients. They check the requests the way AWS does
// (target header, content type, SigV4 authorization present, required
// fields) and keep just enough state to behave like the service.
package awstest

import (
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"
)

// SQS is an in-memory SQS queue behind the JSON protocol.
type SQS struct {
	*httptest.Server
	QueueURL string

	mu       sync.Mutex
	seq      int
	msgs     []*sqsMsg
	arrived  chan struct{}
	Requests map[string]int
	// Problems lists malformed requests the server saw.
	Problems    []string
	failDeletes bool
}

// FailDeletes makes every DeleteMessageBatch entry fail (InternalError)
// while on.
func (q *SQS) FailDeletes(on bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.failDeletes = on
}

type sqsMsg struct {
	id, body, receipt string
	invisibleUntil    time.Time
	receives          int
}

// NewSQS starts the server with one queue.
func NewSQS() *SQS {
	q := &SQS{arrived: make(chan struct{}, 1), Requests: map[string]int{}}
	q.Server = httptest.NewServer(http.HandlerFunc(q.serve))
	q.QueueURL = q.URL + "/123456789012/taskyard-ecs-events"
	return q
}

// Send enqueues a message body (what EventBridge's SQS target does).
func (q *SQS) Send(body string) {
	q.mu.Lock()
	q.seq++
	q.msgs = append(q.msgs, &sqsMsg{id: fmt.Sprintf("5fea7756-0ea4-451a-a703-%012d", q.seq), body: body})
	q.mu.Unlock()
	select {
	case q.arrived <- struct{}{}:
	default:
	}
}

// Len is the number of messages still in the queue (visible or in flight).
func (q *SQS) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.msgs)
}

// Bodies returns the bodies still in the queue.
func (q *SQS) Bodies() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []string
	for _, m := range q.msgs {
		out = append(out, m.body)
	}
	return out
}

// MakeVisible ends the visibility timeout of every in-flight message.
func (q *SQS) MakeVisible() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, m := range q.msgs {
		m.invisibleUntil = time.Time{}
	}
}

func (q *SQS) problem(format string, args ...any) {
	q.Problems = append(q.Problems, fmt.Sprintf(format, args...))
}

func sqsError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	w.Header().Set("x-amzn-query-error", code+";Sender")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"__type": "com.amazonaws.sqs#" + code, "message": msg})
}

func (q *SQS) serve(w http.ResponseWriter, r *http.Request) {
	target := r.Header.Get("X-Amz-Target")
	op, ok := strings.CutPrefix(target, "AmazonSQS.")
	q.mu.Lock()
	q.Requests[op]++
	if r.Method != http.MethodPost || r.URL.Path != "/" {
		q.problem("%s %s: want POST /", r.Method, r.URL.Path)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/x-amz-json-1.0" {
		q.problem("%s: content type %q", op, ct)
	}
	if !strings.HasPrefix(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256 ") {
		q.problem("%s: request not signed with SigV4", op)
	}
	q.mu.Unlock()
	if !ok {
		sqsError(w, 400, "InvalidAction", "unknown target "+target)
		return
	}
	body, _ := io.ReadAll(r.Body)
	var in struct {
		QueueUrl            string
		MaxNumberOfMessages int
		WaitTimeSeconds     int
		VisibilityTimeout   *int
		Entries             []struct{ Id, ReceiptHandle string }
	}
	if err := json.Unmarshal(body, &in); err != nil {
		sqsError(w, 400, "InvalidParameterValue", err.Error())
		return
	}
	if in.QueueUrl != q.QueueURL {
		sqsError(w, 400, "QueueDoesNotExist", "The specified queue does not exist.")
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	switch op {
	case "ReceiveMessage":
		if in.MaxNumberOfMessages < 1 || in.MaxNumberOfMessages > 10 {
			sqsError(w, 400, "InvalidParameterValue", "Value for parameter MaxNumberOfMessages is invalid. Reason: Must be between 1 and 10.")
			return
		}
		if in.WaitTimeSeconds > 20 {
			sqsError(w, 400, "InvalidParameterValue", "WaitTimeSeconds must be <= 20")
			return
		}
		vis := 30 * time.Second
		if in.VisibilityTimeout != nil {
			vis = time.Duration(*in.VisibilityTimeout) * time.Second
		}
		// Long polling, shortened to keep tests fast: wait up to 200ms
		// for a message when the queue is empty.
		deadline := time.Now().Add(min(time.Duration(in.WaitTimeSeconds)*time.Second, 200*time.Millisecond))
		for {
			out := q.receive(in.MaxNumberOfMessages, vis)
			if len(out) > 0 || time.Now().After(deadline) {
				_ = json.NewEncoder(w).Encode(map[string]any{"Messages": out})
				return
			}
			select {
			case <-q.arrived:
			case <-time.After(time.Until(deadline)):
			case <-r.Context().Done():
				return
			}
		}
	case "DeleteMessageBatch":
		if len(in.Entries) == 0 || len(in.Entries) > 10 {
			sqsError(w, 400, "TooManyEntriesInBatchRequest", "batch has 0 or more than 10 entries")
			return
		}
		type failed struct {
			Id, Code, Message string
			SenderFault       bool
		}
		var ok []map[string]string
		var bad []failed
		q.mu.Lock()
		for _, e := range in.Entries {
			if q.failDeletes {
				bad = append(bad, failed{Id: e.Id, Code: "InternalError", Message: "try again", SenderFault: false})
				continue
			}
			found := false
			for i, m := range q.msgs {
				if m.receipt != "" && m.receipt == e.ReceiptHandle {
					q.msgs = append(q.msgs[:i], q.msgs[i+1:]...)
					found = true
					break
				}
			}
			if found {
				ok = append(ok, map[string]string{"Id": e.Id})
			} else {
				bad = append(bad, failed{Id: e.Id, Code: "ReceiptHandleIsInvalid", Message: "The input receipt handle is invalid.", SenderFault: true})
			}
		}
		q.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]any{"Successful": ok, "Failed": bad})
	default:
		sqsError(w, 400, "InvalidAction", "operation "+op+" is not supported by this test server")
	}
}

func (q *SQS) receive(max int, vis time.Duration) []map[string]any {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := time.Now()
	var out []map[string]any
	for _, m := range q.msgs {
		if len(out) == max {
			break
		}
		if now.Before(m.invisibleUntil) {
			continue
		}
		m.receives++
		q.seq++
		m.receipt = fmt.Sprintf("AQEB%s-%d", m.id, q.seq)
		m.invisibleUntil = now.Add(vis)
		sum := md5.Sum([]byte(m.body))
		out = append(out, map[string]any{
			"MessageId":     m.id,
			"ReceiptHandle": m.receipt,
			"MD5OfBody":     hex.EncodeToString(sum[:]),
			"Body":          m.body,
			"Attributes": map[string]string{
				"ApproximateReceiveCount": fmt.Sprint(m.receives),
				"SentTimestamp":           fmt.Sprint(now.UnixMilli()),
			},
		})
	}
	return out
}
