// Package firehoseout sends events to Amazon Kinesis Data Firehose with
// PutRecordBatch: one delivery stream per rendered name template (e.g.
// {cluster}_{service}), batches of at most 500 records and 4 MiB, each
// record one newline-terminated line of at most 1,000 KiB. When Firehose
// answers with FailedPutCount, only the entries that carry an ErrorCode
// are retried.
package firehoseout

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/firehose"
	"github.com/aws/aws-sdk-go-v2/service/firehose/types"
	"github.com/aws/smithy-go"

	"github.com/taskyard/taskyard/services/logrouter/internal/event"
	"github.com/taskyard/taskyard/services/logrouter/internal/output"
	"github.com/taskyard/taskyard/services/logrouter/internal/spool"
)

// Firehose PutRecordBatch limits.
const (
	MaxBatchRecords = 500
	MaxBatchBytes   = 4 << 20
	MaxRecordBytes  = 1000 << 10
)

// API is the part of the Firehose client the sink uses.
type API interface {
	PutRecordBatch(ctx context.Context, in *firehose.PutRecordBatchInput, opts ...func(*firehose.Options)) (*firehose.PutRecordBatchOutput, error)
}

// Sink is the Firehose output.
type Sink struct {
	Client         API
	StreamTemplate string
	Format         event.Format
	Counters       *output.Counters
}

// permanentCodes are whole-call API errors retrying cannot fix.
var permanentCodes = map[string]bool{
	"ResourceNotFoundException": true, "InvalidArgumentException": true,
	"AccessDeniedException": true, "InvalidKMSResourceException": true, "ValidationException": true,
}

type item struct {
	ev   int
	data []byte
}

// Deliver puts evs, grouped by stream, in batches within the limits.
func (s *Sink) Deliver(ctx context.Context, evs []event.Event, end spool.Pos) (spool.Pos, error) {
	streams := map[string][]item{}
	var order []string
	var oversize []event.Event
	for i := range evs {
		line := evs[i].AppendLine(nil, s.Format)
		if len(line) > MaxRecordBytes {
			oversize = append(oversize, evs[i])
			continue
		}
		name := output.Template(s.StreamTemplate).Render(&evs[i])
		if _, ok := streams[name]; !ok {
			order = append(order, name)
		}
		streams[name] = append(streams[name], item{ev: i, data: line})
	}
	var failed []event.Event
	var firstErr error
	var permanent []event.Event
	for _, name := range order {
		items := streams[name]
		for len(items) > 0 {
			n, size := 0, 0
			for n < len(items) && n < MaxBatchRecords && size+len(items[n].data) <= MaxBatchBytes {
				size += len(items[n].data)
				n++
			}
			batch := items[:n]
			items = items[n:]
			recs := make([]types.Record, len(batch))
			for i, it := range batch {
				recs[i] = types.Record{Data: it.data}
			}
			out, err := s.Client.PutRecordBatch(ctx, &firehose.PutRecordBatchInput{DeliveryStreamName: aws.String(name), Records: recs})
			if err != nil {
				var ae smithy.APIError
				if errors.As(err, &ae) && permanentCodes[ae.ErrorCode()] {
					for _, it := range batch {
						permanent = append(permanent, evs[it.ev])
					}
					if firstErr == nil {
						firstErr = fmt.Errorf("firehose stream %s: %w", name, err)
					}
					continue
				}
				for _, it := range batch {
					failed = append(failed, evs[it.ev])
				}
				if firstErr == nil {
					firstErr = fmt.Errorf("firehose stream %s: %w", name, err)
				}
				continue
			}
			okN := 0
			for i, r := range out.RequestResponses {
				if r.ErrorCode != nil && i < len(batch) {
					failed = append(failed, evs[batch[i].ev])
					if firstErr == nil {
						firstErr = fmt.Errorf("firehose stream %s: %s: %s", name, aws.ToString(r.ErrorCode), aws.ToString(r.ErrorMessage))
					}
					continue
				}
				okN++
				s.Counters.ProcBytes.Add(int64(len(batch[i].data)))
			}
			s.Counters.ProcRecords.Add(int64(okN))
		}
	}
	if len(oversize) > 0 {
		permanent = append(permanent, oversize...)
		if firstErr == nil {
			firstErr = fmt.Errorf("%d records longer than Firehose's %d-byte record limit", len(oversize), MaxRecordBytes)
		}
	}
	switch {
	case len(permanent) > 0:
		// Permanent ones go to the dead-letter file; the runner retries
		// the rest.
		return spool.Pos{}, &output.PermanentError{Events: permanent, Remaining: failed, Err: firstErr}
	case len(failed) > 0:
		return spool.Pos{}, &output.PartialError{Remaining: failed, Err: firstErr}
	}
	return end, nil
}

// Flush has nothing buffered.
func (s *Sink) Flush(context.Context, bool) (spool.Pos, bool, error) { return spool.Pos{}, false, nil }

// Close does nothing.
func (s *Sink) Close() error { return nil }
