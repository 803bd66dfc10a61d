// Package s3out archives events to S3 as gzip NDJSON objects. Events are
// grouped by their rendered key prefix (default
// {cluster}/{service}/%Y/%m/%d/%H/ from the event time); a group becomes
// one object when it reaches FlushBytes of uncompressed data or FlushAge,
// so a busy service writes few large objects and a quiet one at most one
// per FlushAge — no small-object storms. Objects larger than PartBytes
// are sent with multipart upload. Nothing is committed in the spool until
// the object holding it is uploaded; after a crash the open groups are
// rebuilt from the spool. Objects are named after the spool ID and their
// first record's position, and uploads not yet committed are noted in an
// upload log (see uploadLog), so records replayed after a crash are not
// stored twice.
package s3out

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/taskyard/taskyard/services/logrouter/internal/event"
	"github.com/taskyard/taskyard/services/logrouter/internal/output"
	"github.com/taskyard/taskyard/services/logrouter/internal/spool"
)

// Config configures the sink.
type Config struct {
	Bucket string
	// KeyTemplate (output.Template syntax) must contain {unique}.
	KeyTemplate string
	FlushBytes  int64
	FlushAge    time.Duration
	PartBytes   int64
	// BufferLimit bounds compressed bytes held in memory; above it the
	// largest group is uploaded early.
	BufferLimit int64
	Format      event.Format
	// ID names the output's spool (spool.ID): {unique} is
	// <ID>-<segment>-<offset>, the spool position of the object's first
	// record, so two spools never collide and an object uploaded again
	// after a crash (uploaded, but the spool not yet committed) replaces
	// itself instead of being duplicated.
	ID string
	// UploadLog, when set, is the file (in the spool's directory) where
	// every uploaded object is noted with the spool positions of its first
	// and last record until the spool is committed past it. After a crash
	// the records of objects noted there are not uploaded again: see
	// uploadLog.
	UploadLog string
	Now       func() time.Time
}

type group struct {
	prefix, suffix string
	key            string
	start          spool.Pos // no record of the group is before this
	first, last    spool.Pos // positions of its first and last record (DeliverAt)
	opened         time.Time
	buf            bytes.Buffer
	zw             *gzip.Writer
	raw            int64
	records        int64
}

// Sink is the S3 output.
type Sink struct {
	c        Config
	client   *s3.Client
	counters *output.Counters

	open    map[string]*group
	pending []*group // closed, waiting for upload
	lastEnd spool.Pos
	seq     atomic.Int64
	line    []byte
	render  event.Renderer
	log     *uploadLog
	// committed is the position the last Deliver or Flush returned (the
	// runner commits it before calling again).
	committed spool.Pos
}

// New returns the sink.
func New(c Config, client *s3.Client, counters *output.Counters) (*Sink, error) {
	if !strings.Contains(c.KeyTemplate, "{unique}") {
		return nil, fmt.Errorf("s3 key template %q must contain {unique}", c.KeyTemplate)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.PartBytes <= 0 {
		c.PartBytes = 8 << 20 // S3 takes parts of 5 MiB and more (the config enforces it)
	}
	s := &Sink{c: c, client: client, counters: counters, open: map[string]*group{}}
	if c.UploadLog != "" {
		l, err := openUploadLog(c.UploadLog)
		if err != nil {
			return nil, err
		}
		s.log = l
	}
	return s, nil
}

func (s *Sink) prefix(e *event.Event) (string, string) {
	full := output.Template(s.c.KeyTemplate).Render(e)
	pre, suf, _ := strings.Cut(full, "{unique}")
	return pre, suf
}

// Deliver adds evs to their groups without knowing their spool
// positions: objects are named <ID>-<unix nanos>-<sequence> (the runner
// calls DeliverAt).
func (s *Sink) Deliver(ctx context.Context, evs []event.Event, end spool.Pos) (spool.Pos, error) {
	return s.DeliverAt(ctx, evs, nil, end)
}

// DeliverAt adds evs, at[i] the spool position of evs[i], to their
// groups; nothing is uploaded here. A group's object is named after the
// position of its first record.
func (s *Sink) DeliverAt(_ context.Context, evs []event.Event, at []spool.Pos, end spool.Pos) (spool.Pos, error) {
	batchStart := s.lastEnd
	for i := range evs {
		pre, suf := s.prefix(&evs[i])
		if at != nil && s.log.uploaded(pre+"\x00"+suf, at[i]) {
			continue // in an object uploaded before a restart
		}
		g := s.open[pre+"\x00"+suf]
		if g == nil {
			now := s.c.Now()
			g = &group{prefix: pre, suffix: suf, start: batchStart, opened: now}
			if at != nil {
				g.start, g.first = at[i], at[i]
				g.key = fmt.Sprintf("%s%s-%d-%d%s", pre, s.c.ID, at[i].Seg, at[i].Off, suf)
			} else {
				g.key = fmt.Sprintf("%s%s-%d-%d%s", pre, s.c.ID, now.UnixNano(), s.seq.Add(1), suf)
			}
			g.zw, _ = gzip.NewWriterLevel(&g.buf, gzip.DefaultCompression)
			s.open[pre+"\x00"+suf] = g
		}
		if at != nil {
			g.last = at[i]
		}
		s.line = s.render.AppendLine(s.line[:0], &evs[i], s.c.Format)
		_, _ = g.zw.Write(s.line)
		g.raw += int64(len(s.line))
		g.records++
	}
	s.lastEnd = end
	s.committed = s.safe()
	return s.committed, nil
}

// safe is the first position some unuploaded group may hold.
func (s *Sink) safe() spool.Pos {
	p := s.lastEnd
	for _, g := range s.open {
		if g.start.Less(p) {
			p = g.start
		}
	}
	for _, g := range s.pending {
		if g.start.Less(p) {
			p = g.start
		}
	}
	return p
}

func (s *Sink) buffered() int64 {
	var n int64
	for _, g := range s.open {
		n += int64(g.buf.Len())
	}
	for _, g := range s.pending {
		n += int64(g.buf.Len())
	}
	return n
}

func (s *Sink) closeGroup(k string, g *group) {
	_ = g.zw.Close()
	delete(s.open, k)
	s.pending = append(s.pending, g)
}

// Flush closes groups that are due (all of them when all) and uploads
// every closed group.
func (s *Sink) Flush(ctx context.Context, all bool) (spool.Pos, bool, error) {
	// The runner has committed what the last call returned: uploads all
	// before it are never replayed again.
	if err := s.log.prune(s.committed); err != nil {
		return s.committed, true, err
	}
	now := s.c.Now()
	for k, g := range s.open {
		if all || g.raw >= s.c.FlushBytes || now.Sub(g.opened) >= s.c.FlushAge {
			s.closeGroup(k, g)
		}
	}
	// Memory cap: close the biggest groups until under the limit.
	for s.c.BufferLimit > 0 && s.buffered() > s.c.BufferLimit && len(s.open) > 0 {
		keys := make([]string, 0, len(s.open))
		for k := range s.open {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool { return s.open[keys[i]].buf.Len() > s.open[keys[j]].buf.Len() })
		s.closeGroup(keys[0], s.open[keys[0]])
	}
	for len(s.pending) > 0 {
		g := s.pending[0]
		if err := s.upload(ctx, g); err != nil {
			return s.safe(), true, err
		}
		s.pending = s.pending[1:]
		s.counters.ProcRecords.Add(g.records)
		s.counters.ProcBytes.Add(g.raw)
		if g.first != (spool.Pos{}) {
			if err := s.log.note(g.prefix+"\x00"+g.suffix, g.first, g.last); err != nil {
				return s.safe(), true, err
			}
		}
	}
	s.committed = s.safe()
	return s.committed, true, nil
}

func (s *Sink) upload(ctx context.Context, g *group) error {
	body := g.buf.Bytes()
	in := &s3.PutObjectInput{
		Bucket:          aws.String(s.c.Bucket),
		Key:             aws.String(g.key),
		Body:            bytes.NewReader(body),
		ContentType:     aws.String("application/x-ndjson"),
		ContentEncoding: aws.String("gzip"),
	}
	if int64(len(body)) <= s.c.PartBytes {
		in.ContentLength = aws.Int64(int64(len(body)))
		if _, err := s.client.PutObject(ctx, in); err != nil {
			return fmt.Errorf("put s3://%s/%s: %w", s.c.Bucket, g.key, err)
		}
		return nil
	}
	if err := s.multipart(ctx, g.key, body); err != nil {
		return fmt.Errorf("multipart upload s3://%s/%s: %w", s.c.Bucket, g.key, err)
	}
	return nil
}

// multipart uploads body in PartBytes parts (the last may be smaller) and
// aborts the upload on failure so no parts are left billed.
func (s *Sink) multipart(ctx context.Context, key string, body []byte) error {
	cr, err := s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
		Bucket: aws.String(s.c.Bucket), Key: aws.String(key),
		ContentType: aws.String("application/x-ndjson"), ContentEncoding: aws.String("gzip"),
	})
	if err != nil {
		return err
	}
	abort := func(err error) error {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_, _ = s.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{Bucket: aws.String(s.c.Bucket), Key: aws.String(key), UploadId: cr.UploadId})
		return err
	}
	var parts []types.CompletedPart
	for i, n := 0, int32(1); i < len(body); i, n = i+int(s.c.PartBytes), n+1 {
		part := body[i:min(i+int(s.c.PartBytes), len(body))]
		up, err := s.client.UploadPart(ctx, &s3.UploadPartInput{
			Bucket: aws.String(s.c.Bucket), Key: aws.String(key), UploadId: cr.UploadId,
			PartNumber: aws.Int32(n), Body: bytes.NewReader(part), ContentLength: aws.Int64(int64(len(part))),
		})
		if err != nil {
			return abort(err)
		}
		parts = append(parts, types.CompletedPart{ETag: up.ETag, PartNumber: aws.Int32(n)})
	}
	_, err = s.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: aws.String(s.c.Bucket), Key: aws.String(key), UploadId: cr.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	})
	if err != nil {
		return abort(err)
	}
	return nil
}

// Close drops in-memory groups; their records are still in the spool.
func (s *Sink) Close() error { return s.log.close() }
