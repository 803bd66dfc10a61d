package app

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/firehose"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/taskyard/taskyard/services/logrouter/internal/event"
	"github.com/taskyard/taskyard/services/logrouter/internal/lrconfig"
	"github.com/taskyard/taskyard/services/logrouter/internal/output"
	"github.com/taskyard/taskyard/services/logrouter/internal/output/datadogout"
	"github.com/taskyard/taskyard/services/logrouter/internal/output/firehoseout"
	"github.com/taskyard/taskyard/services/logrouter/internal/output/s3out"
)

// awsConfig is deps.AWS or the SDK's default chain (env, shared files,
// ECS task role), with the output's region.
func awsConfig(ctx context.Context, base *aws.Config, region string) (aws.Config, error) {
	if base != nil {
		c := base.Copy()
		if region != "" {
			c.Region = region
		}
		return c, nil
	}
	var opts []func(*awsconfig.LoadOptions) error
	if region != "" {
		opts = append(opts, awsconfig.WithRegion(region))
	}
	c, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("aws config: %w", err)
	}
	return c, nil
}

func buildRemoteSink(ctx context.Context, oc lrconfig.Output, fc *lrconfig.File, format event.Format, c *output.Counters, d sinkDeps) (output.Sink, int, int, error) {
	switch oc.Type {
	case "s3":
		ac, err := awsConfig(ctx, d.aws, oc.S3.Region)
		if err != nil {
			return nil, 0, 0, err
		}
		client := s3.NewFromConfig(ac, func(o *s3.Options) {
			if oc.S3.Endpoint != "" {
				o.BaseEndpoint = aws.String(oc.S3.Endpoint)
			}
			o.UsePathStyle = oc.S3.ForcePathStyle
		})
		sink, err := s3out.New(s3out.Config{
			Bucket: oc.S3.Bucket, KeyTemplate: oc.S3.KeyTemplate,
			FlushBytes: int64(oc.S3.FlushBytes), FlushAge: time.Duration(oc.S3.FlushAge),
			PartBytes: int64(oc.S3.PartBytes), BufferLimit: int64(oc.S3.BufferLimit),
			Format: format, ID: d.spoolID, UploadLog: filepath.Join(d.spoolDir, "s3-uploads.ndjson"), Now: d.now,
		}, client, c)
		return sink, 5000, 8 << 20, err
	case "firehose":
		ac, err := awsConfig(ctx, d.aws, oc.Firehose.Region)
		if err != nil {
			return nil, 0, 0, err
		}
		client := firehose.NewFromConfig(ac, func(o *firehose.Options) {
			if oc.Firehose.Endpoint != "" {
				o.BaseEndpoint = aws.String(oc.Firehose.Endpoint)
			}
		})
		return &firehoseout.Sink{Client: client, StreamTemplate: oc.Firehose.StreamTemplate, Format: format, Counters: c}, 2000, 8 << 20, nil
	case "datadog":
		url := oc.Datadog.URL
		if url == "" {
			url = datadogout.IntakeURL(oc.Datadog.Site)
		}
		host := oc.Datadog.Hostname
		if host == "" {
			host, _ = os.Hostname()
		}
		return &datadogout.Sink{
			Client: &http.Client{Timeout: 30 * time.Second}, URL: url, APIKey: oc.Datadog.APIKey,
			Source: oc.Datadog.Source, Hostname: host, StaticTags: fc.Pipeline.StaticTags, Counters: c,
		}, 1000, 4 << 20, nil
	}
	return nil, 0, 0, fmt.Errorf("unknown output type %q", oc.Type)
}

type sinkDeps struct {
	aws      *aws.Config
	spoolID  string // the output's spool.ID
	spoolDir string // the output's spool directory
	now      func() time.Time
	log      *slog.Logger
}
