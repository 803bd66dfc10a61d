package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
)

func newEventsCmd(g *globals) *cobra.Command {
	events := &cobra.Command{Use: "events", Short: "Watch taskyard events on the bus"}
	var (
		subject string
		asJSON  bool
	)
	tail := &cobra.Command{
		Use:   "tail",
		Short: "Print every taskyard event as it is published",
		Long: `Subscribe to taskyard subjects and print every event, decoded. Control
requests (<prefix>.ctl.>) are not events and are left out.

Default output: time received, subject, message type, the event as compact
JSON. With --json: one object per line,
  {"subject": "...", "type": "taskyard.v1.RunDispatched", "event": {...}}
where event is protojson (lowerCamel field names, RFC3339 timestamps, enum
names). Runs until interrupted.`,
		Example: `  taskyard events tail
  taskyard events tail --subject 'taskyard.run.>' --json | jq .event.runId`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if subject == "" {
				subject = g.subjects().All()
			}
			nc, err := g.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer nc.Close()
			ctlPrefix := g.NATS.Prefix + ".ctl."
			msgs := make(chan *nats.Msg, 4096)
			sub, err := nc.ChanSubscribe(subject, msgs)
			if err != nil {
				return fmt.Errorf("subscribe %s: %w", subject, err)
			}
			defer func() { _ = sub.Unsubscribe() }()
			if err := nc.Flush(); err != nil {
				return fmt.Errorf("subscribe %s: %w", subject, err)
			}
			fmt.Fprintf(g.errOut, "tailing %s on %s (Ctrl-C to stop)\n", subject, nc.ConnectedUrlRedacted())
			mo := protojson.MarshalOptions{}
			for {
				select {
				case <-cmd.Context().Done():
					return nil
				case m := <-msgs:
					if strings.HasPrefix(m.Subject, ctlPrefix) {
						continue
					}
					ev, err := v1.Decode(g.NATS.Prefix, m.Subject, m.Header, m.Data)
					if err != nil {
						fmt.Fprintf(g.errOut, "%s: %v\n", m.Subject, err)
						continue
					}
					line, err := formatEvent(mo, m.Subject, ev, asJSON, time.Now())
					if err != nil {
						fmt.Fprintf(g.errOut, "%s: %v\n", m.Subject, err)
						continue
					}
					fmt.Fprintln(g.out, line)
				}
			}
		},
	}
	tail.Flags().StringVar(&subject, "subject", "", "subject filter (default <prefix>.>)")
	tail.Flags().BoolVar(&asJSON, "json", false, "one JSON object per line")
	events.AddCommand(tail)
	return events
}

// formatEvent renders one decoded event.
func formatEvent(mo protojson.MarshalOptions, subject string, ev proto.Message, asJSON bool, now time.Time) (string, error) {
	body, err := mo.Marshal(ev)
	if err != nil {
		return "", err
	}
	typ := string(ev.ProtoReflect().Descriptor().FullName())
	if asJSON {
		b, err := json.Marshal(struct {
			Subject string          `json:"subject"`
			Type    string          `json:"type"`
			Event   json.RawMessage `json:"event"`
		}{subject, typ, compact(body)})
		return string(b), err
	}
	return fmt.Sprintf("%s %s %s %s", now.UTC().Format("15:04:05.000"), subject,
		strings.TrimPrefix(typ, "taskyard.v1."), compact(body)), nil
}

// compact removes the random white space protojson adds.
func compact(b []byte) json.RawMessage {
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return b
	}
	return out.Bytes()
}
