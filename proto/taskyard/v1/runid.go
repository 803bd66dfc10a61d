package taskyardv1

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"time"
)

// MaxRunIDLen is the longest run id RunID returns: the limit of ECS RunTask's
// clientToken.
const MaxRunIDLen = 64

// RunID returns the deterministic id of the run of schedule fired for
// scheduledAt by trigger. The same inputs always give the same id, so a fire
// dispatched twice (failover, retry) is one run everywhere: it is the ECS
// clientToken, the JetStream Nats-Msg-Id of the run's dispatch decision and
// the key in KV taskyard-runs.
//
// A catch-up fire is the same fire as the scheduled one it stands for, so
// TRIGGER_CATCHUP gives the same id as TRIGGER_SCHEDULE: a fire the old leader
// dispatched just before dying and the new leader catches up is one run.
//
// Shape: <schedule, cut to 28>-<UTC time as 20060102T150405Z>-<trigger letter>-<16 hex of sha256>,
// at most 64 characters of [a-zA-Z0-9_-] (valid as a KV key and a
// clientToken). The hash covers the full name, the time to the nanosecond
// and the trigger, so truncation never makes two runs collide.
func RunID(schedule string, scheduledAt time.Time, trigger Trigger) string {
	if trigger == Trigger_TRIGGER_CATCHUP {
		trigger = Trigger_TRIGGER_SCHEDULE
	}
	t := scheduledAt.UTC()
	sum := sha256.Sum256([]byte(schedule + "\x00" + t.Format(time.RFC3339Nano) + "\x00" + trigger.String()))
	name := schedule
	if len(name) > 28 {
		name = name[:28]
	}
	var b strings.Builder
	b.Grow(MaxRunIDLen)
	b.WriteString(name)
	b.WriteByte('-')
	b.WriteString(t.Format("20060102T150405Z"))
	b.WriteByte('-')
	b.WriteByte(triggerLetter(trigger))
	b.WriteByte('-')
	b.WriteString(hex.EncodeToString(sum[:8]))
	return b.String()
}

func triggerLetter(t Trigger) byte {
	switch t {
	case Trigger_TRIGGER_SCHEDULE:
		return 's'
	case Trigger_TRIGGER_MANUAL:
		return 'm'
	}
	return 'u'
}
