package app

import (
	"context"
	"time"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/kit/schedule"
	"github.com/taskyard/taskyard/services/scheduler/internal/control"
	"github.com/taskyard/taskyard/services/scheduler/internal/ecsrunner"
	"github.com/taskyard/taskyard/services/scheduler/internal/specdiff"
)

// Control verbs: the last token of <prefix>.ctl.scheduler.<verb>.
const (
	VerbList    = control.VerbList
	VerbGet     = control.VerbGet
	VerbApply   = control.VerbApply
	VerbCreate  = control.VerbCreate
	VerbPrune   = control.VerbPrune
	VerbEnable  = control.VerbEnable
	VerbDisable = control.VerbDisable
	VerbTrigger = control.VerbTrigger
	VerbNext    = control.VerbNext
)

// FormatChanges renders an apply reply's field-level diff, one change per
// line (+ added, ~ changed, - removed).
func FormatChanges(changes []*v1.FieldChange) string { return specdiff.Format(changes) }

// Rendered holds the JSON request bodies the ECS runner would send.
type Rendered = ecsrunner.Rendered

// RenderECS returns the RegisterTaskDefinition and RunTask request bodies
// the ECS runner would send for a fire of spec at scheduledAt on profile p,
// serialized by the real AWS SDK client (nothing is sent).
func RenderECS(ctx context.Context, spec *v1.ScheduleSpec, p *schedule.Profile, scheduledAt time.Time) (*Rendered, error) {
	return ecsrunner.Render(ctx, spec, p, scheduledAt)
}
