package taskyardv1

import "strings"

// JobFamilyPrefix begins the ECS task definition family of every
// schedule's job (and the local runners' equivalent). It differs from the
// daemons' own families (taskyard-scheduler, taskyard-logrouter, ...), so a
// schedule named like a daemon can never register a revision of the
// daemon's task definition, and IAM can grant the scheduler exactly
// task-definition/taskyard-job-*.
const JobFamilyPrefix = "taskyard-job-"

// JobFamily is the task definition family of schedule's job.
func JobFamily(schedule string) string { return JobFamilyPrefix + schedule }

// ScheduleFromJobFamily returns the schedule of a job family
// ("taskyard-job-nightly" → "nightly"); ok is false for other families.
func ScheduleFromJobFamily(family string) (schedule string, ok bool) {
	s, ok := strings.CutPrefix(family, JobFamilyPrefix)
	return s, ok && s != ""
}
