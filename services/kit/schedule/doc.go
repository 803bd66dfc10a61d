// Package schedule is taskyard's schedule language: the expressions that say
// when a job fires, the YAML schedule files developers write, the cluster
// profiles SRE writes, and the Fargate task sizing rule. The scheduler,
// exitwatch and the CLI all use it so that they agree on every fire time to
// the second.
//
// # Expressions
//
// [ParseExpr] accepts four kinds of expression:
//
//   - rate(N unit): every N seconds, minutes, hours or days (unit singular
//     for N=1, plural otherwise, like EventBridge; seconds are a taskyard
//     extension). Fires at anchor + k*interval for any integer k, so the
//     schedule is pure arithmetic on absolute time and ignores DST.
//   - cron(min hour day-of-month month day-of-week year): EventBridge
//     syntax with * , - / ? L W LW # and the names JAN-DEC and SUN-SAT.
//     Day-of-week counts 1-7 = SUN-SAT. Exactly one of the two day fields
//     must be "?"; the other one alone decides the day. The year is
//     1970-2199.
//   - at(YYYY-MM-DDThh:mm:ss): once, at that wall time.
//   - a 5-field crontab line (min hour day-of-month month day-of-week) with
//     day-of-week 0-7 (0 and 7 are Sunday) and names. As in Vixie cron, when
//     neither day field starts with "*" a day matches if EITHER field
//     matches; otherwise both must match ("*/2" counts as unrestricted).
//
// cron and crontab expressions fire at second 0 of the selected minute;
// taskyard dispatches within a second of that (EventBridge only promises
// "within the minute"). Sub-minute schedules use rate(N seconds).
//
// # Time zones and daylight saving
//
// Calendar expressions (cron, crontab, at) are evaluated on the wall clock of
// an IANA zone and follow EventBridge Scheduler's rule: a wall time skipped
// by a spring-forward change does not fire that day, and a wall time that
// occurs twice on fall-back fires once, at its first occurrence. An at()
// time that does not exist in its zone is a parse error. rate expressions are
// absolute durations and are not affected.
//
// Next walks the calendar field by field (year, month, day, hour, minute)
// rather than minute by minute, and stops at the end of 2199, so an
// expression that can never fire (cron(0 0 30 2 ? *)) returns the zero Time
// in well under a millisecond.
//
// No Go cron library implements EventBridge's dialect (1-7 = SUN-SAT, the
// "?" rule, L/W/#, the year field, its DST rule), so the parser and the
// matcher are written here.
//
// # Files
//
// [ParseSchedule] and [ParseProfile] decode one YAML document each by walking
// the yaml.Node tree, so that every problem in a file (unknown field, wrong
// type, bad value, missing field) is reported at once as a [Problem] with
// file:line:column and a field path such as containers[1].memory.
// [LoadPaths] loads files and directories and adds the cross-file checks.
//
// A file is a cluster profile if and only if its parent directory is named
// "clusters"; every other *.yml or *.yaml file is a schedule.
//
// [Schedule.ValidateWith] checks a schedule against its cluster profile and
// [Schedule.TaskSize] gives the task size to register. [Schedule.ToProto],
// [ScheduleFromProto], [Profile.ToProto] and [ProfileFromProto] convert to
// and from the wire contract (taskyardv1.ScheduleSpec, ClusterProfile),
// applying the same validation and defaults as files.
//
// [FargateSize] picks the smallest Fargate task size that fits the
// containers, from the table in [FargateSizes].
package schedule
