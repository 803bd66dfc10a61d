module github.com/taskyard/taskyard/services/scheduler

go 1.26.0

replace (
	github.com/taskyard/taskyard/proto => ../../proto
	github.com/taskyard/taskyard/services/kit => ../kit
)
