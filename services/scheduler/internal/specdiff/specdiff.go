// Package specdiff computes the field-level difference between two versions
// of a schedule, as printed by `taskyard schedule apply` and `schedule
// diff`: one FieldChange per changed scalar, list element or map key, with
// paths in the schedule file's spelling (schedule.expression,
// containers[0].image, containers[0].environment.LOG_LEVEL).
package specdiff

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
)

// Ops of a FieldChange.
const (
	OpAdded   = "added"
	OpChanged = "changed"
	OpRemoved = "removed"
)

// ignored are bookkeeping fields set by apply itself.
var ignored = map[protoreflect.Name]bool{"applied_at": true, "applied_by": true, "source_file": true}

// Diff returns the changes from old to new. A nil old is a whole new
// schedule (one "added" change with an empty field), a nil new a removed
// one.
func Diff(old, new *v1.ScheduleSpec) []*v1.FieldChange {
	switch {
	case old == nil && new == nil:
		return nil
	case old == nil:
		return []*v1.FieldChange{{Schedule: new.GetName(), Op: OpAdded}}
	case new == nil:
		return []*v1.FieldChange{{Schedule: old.GetName(), Op: OpRemoved}}
	}
	d := &differ{schedule: new.GetName()}
	d.message("", old.ProtoReflect(), new.ProtoReflect())
	return d.out
}

type differ struct {
	schedule string
	out      []*v1.FieldChange
}

func (d *differ) add(op, path, oldV, newV string) {
	d.out = append(d.out, &v1.FieldChange{Schedule: d.schedule, Op: op, Field: path, OldValue: oldV, NewValue: newV})
}

func fieldName(fd protoreflect.FieldDescriptor, top bool) string {
	if top && fd.Name() == "timing" {
		return "schedule" // the block's name in schedule files
	}
	return fd.JSONName()
}

func join(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

func (d *differ) message(path string, a, b protoreflect.Message) {
	fields := b.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if path == "" && ignored[fd.Name()] {
			continue
		}
		p := join(path, fieldName(fd, path == ""))
		switch {
		case fd.IsList():
			d.list(p, fd, a.Get(fd).List(), b.Get(fd).List())
		case fd.IsMap():
			d.mapField(p, fd, a.Get(fd).Map(), b.Get(fd).Map())
		case fd.Kind() == protoreflect.MessageKind && !isScalarMessage(fd.Message()):
			ha, hb := a.Has(fd), b.Has(fd)
			switch {
			case !ha && !hb:
			default:
				am := a.Get(fd).Message()
				bm := b.Get(fd).Message()
				if !hb {
					bm = am.New()
				}
				if !ha {
					am = bm.New()
				}
				d.message(p, am, bm)
			}
		default:
			va, vb := render(fd, a, a.Has(fd)), render(fd, b, b.Has(fd))
			if va != vb {
				op := OpChanged
				if !a.Has(fd) {
					op = OpAdded
				} else if !b.Has(fd) {
					op = OpRemoved
				}
				d.add(op, p, va, vb)
			}
		}
	}
}

func isScalarMessage(md protoreflect.MessageDescriptor) bool {
	switch md.FullName() {
	case "google.protobuf.Timestamp", "google.protobuf.Duration":
		return true
	}
	return false
}

func (d *differ) list(p string, fd protoreflect.FieldDescriptor, a, b protoreflect.List) {
	n := max(a.Len(), b.Len())
	for i := 0; i < n; i++ {
		ip := fmt.Sprintf("%s[%d]", p, i)
		switch {
		case i >= a.Len():
			d.add(OpAdded, ip, "", value(fd, b.Get(i)))
		case i >= b.Len():
			d.add(OpRemoved, ip, value(fd, a.Get(i)), "")
		case fd.Kind() == protoreflect.MessageKind && !isScalarMessage(fd.Message()):
			d.message(ip, a.Get(i).Message(), b.Get(i).Message())
		default:
			if va, vb := value(fd, a.Get(i)), value(fd, b.Get(i)); va != vb {
				d.add(OpChanged, ip, va, vb)
			}
		}
	}
}

func (d *differ) mapField(p string, fd protoreflect.FieldDescriptor, a, b protoreflect.Map) {
	keys := map[string]protoreflect.MapKey{}
	a.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool { keys[k.String()] = k; return true })
	b.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool { keys[k.String()] = k; return true })
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	vd := fd.MapValue()
	for _, name := range names {
		k := keys[name]
		kp := p + "." + name
		ha, hb := a.Has(k), b.Has(k)
		switch {
		case !ha:
			d.add(OpAdded, kp, "", value(vd, b.Get(k)))
		case !hb:
			d.add(OpRemoved, kp, value(vd, a.Get(k)), "")
		default:
			if va, vb := value(vd, a.Get(k)), value(vd, b.Get(k)); va != vb {
				d.add(OpChanged, kp, va, vb)
			}
		}
	}
}

func render(fd protoreflect.FieldDescriptor, m protoreflect.Message, has bool) string {
	if !has {
		return ""
	}
	return value(fd, m.Get(fd))
}

func value(fd protoreflect.FieldDescriptor, v protoreflect.Value) string {
	switch fd.Kind() {
	case protoreflect.MessageKind:
		msg := v.Message().Interface()
		switch x := msg.(type) {
		case *durationpb.Duration:
			return x.AsDuration().String()
		case *timestamppb.Timestamp:
			return x.AsTime().UTC().Format(time.RFC3339)
		}
		return fmt.Sprint(msg)
	case protoreflect.StringKind:
		return v.String()
	case protoreflect.BoolKind:
		return strconv.FormatBool(v.Bool())
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return string(ev.Name())
		}
	}
	return v.String()
}

// Format renders changes one per line, like
//
//	~ nightly  schedule.expression: cron(0 3 * * ? *) -> cron(0 4 * * ? *)
//	+ hourly   (new schedule)
func Format(changes []*v1.FieldChange) string {
	var b strings.Builder
	for _, c := range changes {
		sign := map[string]string{OpAdded: "+", OpChanged: "~", OpRemoved: "-"}[c.GetOp()]
		switch {
		case c.GetField() == "" && c.GetOp() == OpAdded:
			fmt.Fprintf(&b, "%s %s (new schedule)\n", sign, c.GetSchedule())
		case c.GetField() == "" && c.GetOp() == OpRemoved:
			fmt.Fprintf(&b, "%s %s (schedule removed)\n", sign, c.GetSchedule())
		case c.GetOp() == OpAdded:
			fmt.Fprintf(&b, "%s %s %s: %s\n", sign, c.GetSchedule(), c.GetField(), c.GetNewValue())
		case c.GetOp() == OpRemoved:
			fmt.Fprintf(&b, "%s %s %s: %s\n", sign, c.GetSchedule(), c.GetField(), c.GetOldValue())
		default:
			fmt.Fprintf(&b, "%s %s %s: %s -> %s\n", sign, c.GetSchedule(), c.GetField(), c.GetOldValue(), c.GetNewValue())
		}
	}
	return b.String()
}
