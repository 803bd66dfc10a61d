module github.com/taskyard/taskyard/tools

go 1.26.0

replace (
	github.com/taskyard/taskyard/proto => ../proto
	github.com/taskyard/taskyard/services/kit => ../services/kit
)

require (
	github.com/bufbuild/protocompile v0.14.1
	google.golang.org/protobuf v1.36.12
)

require golang.org/x/sync v0.8.0 // indirect
