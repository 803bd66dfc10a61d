package app_test

import (
	"errors"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/scheduler/app"
)

// TestPermissionSplit boots nats-server with examples/nats-permissions.conf
// and checks that a developer can update but not create or delete
// schedules, while SRE can.
func TestPermissionSplit(t *testing.T) {
	t.Setenv("TASKYARD_SCHEDULER_PASSWORD", "s3cret-sched")
	t.Setenv("TASKYARD_DEVELOPER_PASSWORD", "s3cret-dev")
	t.Setenv("TASKYARD_SRE_PASSWORD", "s3cret-sre")
	opts, err := server.ProcessConfigFile("../../../examples/nats-permissions.conf")
	require.NoError(t, err)
	opts.Host, opts.Port, opts.StoreDir, opts.NoLog, opts.NoSigs = "127.0.0.1", -1, t.TempDir(), true, true
	srv, err := server.NewServer(opts)
	require.NoError(t, err)
	srv.Start()
	t.Cleanup(srv.Shutdown)
	require.True(t, srv.ReadyForConnections(10*time.Second))
	withUser := func(user, pass string) string {
		u, _ := url.Parse(srv.ClientURL())
		u.User = url.UserPassword(user, pass)
		return u.String()
	}

	cfg := baseConfig(withUser("scheduler", "s3cret-sched"))
	start(t, cfg, app.Deps{Runner: newRecRunner()})

	connect := func(user, pass string) (*nats.Conn, *violations) {
		v := &violations{}
		nc, err := nats.Connect(withUser(user, pass), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { v.add(err) }))
		require.NoError(t, err)
		t.Cleanup(nc.Close)
		return nc, v
	}
	dev, devErrs := connect("developer", "s3cret-dev")
	sre, _ := connect("sre", "s3cret-sre")

	spec := execSpec("owned-by-dev", "rate(1 hour)", "true")
	send := func(nc *nats.Conn, verb string, req proto.Message) (*v1.ApplyReply, error) {
		data, _ := proto.Marshal(req)
		m, err := nc.Request("taskyard.ctl.scheduler."+verb, data, 2*time.Second)
		if err != nil {
			return nil, err
		}
		r := &v1.ApplyReply{}
		require.NoError(t, proto.Unmarshal(m.Data, r))
		return r, nil
	}
	// Wait for the scheduler to answer.
	var lr v1.ListReply
	request(t, sre, "list", &v1.NameRequest{}, &lr)

	// The developer cannot create...
	_, err = send(dev, "create", &v1.ApplyRequest{Schedules: []*v1.ScheduleSpec{spec}})
	require.Error(t, err)
	require.Eventually(t, func() bool { return devErrs.has("taskyard.ctl.scheduler.create") }, 5*time.Second, 10*time.Millisecond)
	// ...nor write the bucket behind the scheduler's back.
	require.NoError(t, dev.Publish("$KV.taskyard-schedules.owned-by-dev", []byte("x")))
	require.Eventually(t, func() bool { return devErrs.has("$KV.taskyard-schedules.owned-by-dev") }, 5*time.Second, 10*time.Millisecond)

	// SRE creates the slot; the developer updates it.
	r, err := send(sre, "create", &v1.ApplyRequest{Schedules: []*v1.ScheduleSpec{spec}, AppliedBy: "sre"})
	require.NoError(t, err)
	require.True(t, r.Applied, r.Error)
	spec.Timing.Expression = "rate(2 hours)"
	r, err = send(dev, "apply", &v1.ApplyRequest{Schedules: []*v1.ScheduleSpec{spec}, AppliedBy: "dev"})
	require.NoError(t, err)
	require.True(t, r.Applied, r.Error)
	require.Equal(t, "schedule.expression", r.Changes[0].Field)

	// Deleting needs prune, which only SRE may send.
	_, err = send(dev, "prune", &v1.ApplyRequest{Delete: []string{"owned-by-dev"}})
	require.Error(t, err)
	r, err = send(sre, "prune", &v1.ApplyRequest{Delete: []string{"owned-by-dev"}})
	require.NoError(t, err)
	require.True(t, r.Applied, r.Error)
}

type violations struct {
	mu   sync.Mutex
	errs []error
}

func (v *violations) add(err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.errs = append(v.errs, err)
}

func (v *violations) has(subject string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, err := range v.errs {
		if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), subject) {
			return true
		}
	}
	return false
}
