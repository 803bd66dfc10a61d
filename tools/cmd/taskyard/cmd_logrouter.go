package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
)

// addLogrouterCommands adds `taskyard logs tail`.
func addLogrouterCommands(root, _ *cobra.Command, g *globals) {
	logs := &cobra.Command{Use: "logs", Short: "Follow the log lines the logrouters receive"}
	logs.AddCommand(newLogsTailCmd(g))
	root.AddCommand(logs)
}

// tailTTL is how long a logrouter keeps sending without a renewal; the
// CLI renews at a third of it, so lines stop soon after it exits.
const tailTTL = 30 * time.Second

func newLogsTailCmd(g *globals) *cobra.Command {
	var cluster, service, level string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "tail",
		Short: "Print log lines as every logrouter receives them",
		Long: `Ask every logrouter (over <prefix>.ctl.logrouter.tail) to send the lines
matching the filters to this command's inbox, and print them until
interrupted. Logrouters send lines only while someone tails: the request is
renewed every 10 s and lapses 30 s after the command stops.

--cluster and --service are globs (path.Match syntax); --level is the
minimum level (debug, info, warn, error, fatal; lines of unknown level count
as info).

Output: time, cluster/service/container, level, the line. With --json: one
object per line with time, cluster, service, container, task, level, source
and log.`,
		Example: `  taskyard logs tail
  taskyard logs tail --cluster prod --service 'nightly-*' --level warn`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if level != "" {
				switch level {
				case "debug", "info", "warn", "error", "fatal":
				default:
					return usageError("--level %q: want debug, info, warn, error or fatal", level)
				}
			}
			nc, err := g.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer nc.Close()
			return tailLogs(cmd.Context(), nc, g, &v1.TailRequest{Cluster: cluster, Service: service, Level: level, TtlSeconds: int32(tailTTL / time.Second)}, asJSON, g.out)
		},
	}
	cmd.Flags().StringVar(&cluster, "cluster", "", "cluster glob (default: every cluster)")
	cmd.Flags().StringVar(&service, "service", "", "service (schedule) glob (default: every service)")
	cmd.Flags().StringVar(&level, "level", "", "minimum level: debug, info, warn, error, fatal")
	cmd.Flags().BoolVar(&asJSON, "json", false, "one JSON object per line")
	return cmd
}

func tailLogs(ctx context.Context, nc *nats.Conn, g *globals, req *v1.TailRequest, asJSON bool, out io.Writer) error {
	req.Inbox = nc.NewInbox()
	lines := make(chan *nats.Msg, 4096)
	sub, err := nc.ChanSubscribe(req.Inbox, lines)
	if err != nil {
		return fmt.Errorf("subscribe tail inbox: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	subject := g.subjects().Ctl("logrouter", "tail")
	ask := func() error {
		data, err := proto.Marshal(req)
		if err != nil {
			return err
		}
		msg, err := nc.Request(subject, data, g.Timeout)
		if err != nil {
			return fmt.Errorf("ask logrouters on %s: %w", subject, err)
		}
		var reply v1.AckReply
		if err := proto.Unmarshal(msg.Data, &reply); err != nil {
			return fmt.Errorf("decode tail reply: %w", err)
		}
		if reply.Error != "" {
			return fmt.Errorf("logrouter: %s", reply.Error)
		}
		return nil
	}
	if err := ask(); err != nil {
		return err
	}
	fmt.Fprintf(g.errOut, "tailing logs on %s (Ctrl-C to stop)\n", nc.ConnectedUrlRedacted())
	renew := time.NewTicker(tailTTL / 3)
	defer renew.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-renew.C:
			if err := ask(); err != nil {
				fmt.Fprintln(g.errOut, err)
			}
		case m := <-lines:
			var l v1.TailLine
			if err := proto.Unmarshal(m.Data, &l); err != nil {
				fmt.Fprintf(g.errOut, "decode tail line: %v\n", err)
				continue
			}
			fmt.Fprintln(out, formatTailLine(&l, asJSON))
		}
	}
}

func formatTailLine(l *v1.TailLine, asJSON bool) string {
	t := l.GetTime().AsTime().UTC().Format(time.RFC3339Nano)
	if asJSON {
		b, _ := json.Marshal(map[string]string{
			"time": t, "cluster": l.GetCluster(), "service": l.GetService(), "container": l.GetContainer(),
			"task": l.GetTask(), "level": l.GetLevel(), "source": l.GetSource(), "log": l.GetLog(),
		})
		return string(b)
	}
	return fmt.Sprintf("%s %s/%s/%s %s %s", t, l.GetCluster(), l.GetService(), l.GetContainer(), l.GetLevel(), l.GetLog())
}
