// Command protogen regenerates the Go code of taskyard's contract
// (proto/taskyard/v1/*.proto) the way `protoc --go_out=paths=source_relative`
// would, using only Go modules pinned in tools/go.mod: bufbuild/protocompile
// parses the .proto files and protoc-gen-go's own generator
// (google.golang.org/protobuf/cmd/protoc-gen-go/internal_gengo) writes the Go.
//
// It exists so that `make proto` and `make proto-check` work on a machine
// that has only Go: no protoc binary, and no buf, whose dependency tree would
// join every module's build list through go.work.
//
// Usage:
//
//	protogen -I ../proto -out ../proto taskyard/v1/run.proto ...
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bufbuild/protocompile"
	"google.golang.org/protobuf/cmd/protoc-gen-go/internal_gengo"
	"google.golang.org/protobuf/compiler/protogen"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/pluginpb"
)

func main() {
	include := flag.String("I", ".", "import root the .proto paths are relative to")
	out := flag.String("out", ".", "directory the generated files are written under (source-relative)")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: protogen -I DIR -out DIR FILE.proto...")
		os.Exit(2)
	}
	if err := run(context.Background(), *include, *out, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "protogen:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, include, out string, files []string) error {
	compiler := protocompile.Compiler{
		Resolver:       protocompile.WithStandardImports(&protocompile.SourceResolver{ImportPaths: []string{include}}),
		SourceInfoMode: protocompile.SourceInfoStandard,
	}
	compiled, err := compiler.Compile(ctx, files...)
	if err != nil {
		return fmt.Errorf("compile: %w", err)
	}

	// CodeGeneratorRequest.proto_file must list every file in topological
	// order, dependencies first, as protoc does.
	req := &pluginpb.CodeGeneratorRequest{
		FileToGenerate: files,
		Parameter:      proto.String("paths=source_relative"),
	}
	seen := map[string]bool{}
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		imports := fd.Imports()
		for i := 0; i < imports.Len(); i++ {
			add(imports.Get(i).FileDescriptor)
		}
		req.ProtoFile = append(req.ProtoFile, protodesc.ToFileDescriptorProto(fd))
	}
	for _, f := range compiled {
		add(f)
	}
	// Strip json_name the compiler fills in, as protoc does for the request.
	for _, fdp := range req.ProtoFile {
		stripJSONNames(fdp)
	}

	plugin, err := protogen.Options{}.New(req)
	if err != nil {
		return fmt.Errorf("plugin: %w", err)
	}
	plugin.SupportedFeatures = internal_gengo.SupportedFeatures
	plugin.SupportedEditionsMinimum = internal_gengo.SupportedEditionsMinimum
	plugin.SupportedEditionsMaximum = internal_gengo.SupportedEditionsMaximum
	for _, f := range plugin.Files {
		if f.Generate {
			internal_gengo.GenerateFile(plugin, f)
		}
	}
	resp := plugin.Response()
	if resp.Error != nil {
		return fmt.Errorf("generate: %s", resp.GetError())
	}
	for _, f := range resp.File {
		path := filepath.Join(out, f.GetName())
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, []byte(f.GetContent()), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func stripJSONNames(fdp *descriptorpb.FileDescriptorProto) {
	var msg func(m *descriptorpb.DescriptorProto)
	msg = func(m *descriptorpb.DescriptorProto) {
		for _, f := range m.Field {
			f.JsonName = nil
		}
		for _, n := range m.NestedType {
			msg(n)
		}
	}
	for _, m := range fdp.MessageType {
		msg(m)
	}
}
