package deploytest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// decodeStrict decodes data into the value out points to, rejecting unknown
// and duplicate keys, wrong JSON types and enum values the type does not
// list. Errors name file:line and the field path.
func decodeStrict(file string, data []byte, out any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	d := &strictDecoder{file: file, data: data, dec: dec}
	v := reflect.ValueOf(out)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return errors.New("decodeStrict: out must be a non-nil pointer")
	}
	if err := d.value(v.Elem(), ""); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return d.errorf("", "trailing data after the top-level value")
	}
	return nil
}

type strictDecoder struct {
	file string
	data []byte
	dec  *json.Decoder
}

func (d *strictDecoder) errorf(path, format string, args ...any) error {
	off := int(d.dec.InputOffset())
	line := 1 + bytes.Count(d.data[:min(off, len(d.data))], []byte("\n"))
	if path == "" {
		path = "(top level)"
	}
	return fmt.Errorf("%s:%d: %s: %s", d.file, line, path, fmt.Sprintf(format, args...))
}

func (d *strictDecoder) value(v reflect.Value, path string) error {
	tok, err := d.dec.Token()
	if err != nil {
		return d.errorf(path, "%v", err)
	}
	return d.valueFrom(tok, v, path)
}

func (d *strictDecoder) valueFrom(tok json.Token, v reflect.Value, path string) error {
	if tok == nil {
		switch v.Kind() {
		case reflect.Pointer, reflect.Slice, reflect.Map:
			v.SetZero()
			return nil
		}
		return d.errorf(path, "null is not a valid %s", v.Type())
	}
	switch v.Kind() {
	case reflect.Pointer:
		elem := reflect.New(v.Type().Elem())
		if err := d.valueFrom(tok, elem.Elem(), path); err != nil {
			return err
		}
		v.Set(elem)
		return nil
	case reflect.Struct:
		if tok != json.Delim('{') {
			return d.errorf(path, "want an object for %s, got %v", v.Type(), tok)
		}
		seen := map[string]bool{}
		for d.dec.More() {
			kt, err := d.dec.Token()
			if err != nil {
				return d.errorf(path, "%v", err)
			}
			key := kt.(string)
			fpath := join(path, key)
			if seen[key] {
				return d.errorf(fpath, "duplicate key")
			}
			seen[key] = true
			f, ok := fieldFold(v, key)
			if !ok {
				return d.errorf(fpath, "unknown field (no such member in %s)", v.Type())
			}
			if err := d.value(f, fpath); err != nil {
				return err
			}
		}
		_, err := d.dec.Token() // '}'
		return err
	case reflect.Slice:
		if tok != json.Delim('[') {
			return d.errorf(path, "want an array for %s, got %v", v.Type(), tok)
		}
		s := reflect.MakeSlice(v.Type(), 0, 4)
		for i := 0; d.dec.More(); i++ {
			e := reflect.New(v.Type().Elem()).Elem()
			if err := d.value(e, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
			s = reflect.Append(s, e)
		}
		v.Set(s)
		_, err := d.dec.Token() // ']'
		return err
	case reflect.Map:
		if tok != json.Delim('{') || v.Type().Key().Kind() != reflect.String {
			return d.errorf(path, "want an object for %s, got %v", v.Type(), tok)
		}
		m := reflect.MakeMap(v.Type())
		for d.dec.More() {
			kt, err := d.dec.Token()
			if err != nil {
				return d.errorf(path, "%v", err)
			}
			key := kt.(string)
			if m.MapIndex(reflect.ValueOf(key).Convert(v.Type().Key())).IsValid() {
				return d.errorf(join(path, key), "duplicate key")
			}
			e := reflect.New(v.Type().Elem()).Elem()
			if err := d.value(e, join(path, key)); err != nil {
				return err
			}
			m.SetMapIndex(reflect.ValueOf(key).Convert(v.Type().Key()), e)
		}
		v.Set(m)
		_, err := d.dec.Token() // '}'
		return err
	case reflect.String:
		s, ok := tok.(string)
		if !ok {
			return d.errorf(path, "want a string for %s, got %v", v.Type(), tok)
		}
		if err := checkEnum(v.Type(), s); err != nil {
			return d.errorf(path, "%v", err)
		}
		v.SetString(s)
		return nil
	case reflect.Bool:
		b, ok := tok.(bool)
		if !ok {
			return d.errorf(path, "want true or false, got %v", tok)
		}
		v.SetBool(b)
		return nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := tok.(json.Number)
		if !ok {
			return d.errorf(path, "want a number, got %v", tok)
		}
		i, err := strconv.ParseInt(n.String(), 10, v.Type().Bits())
		if err != nil {
			return d.errorf(path, "%v does not fit %s", n, v.Type())
		}
		v.SetInt(i)
		return nil
	case reflect.Float32, reflect.Float64:
		n, ok := tok.(json.Number)
		if !ok {
			return d.errorf(path, "want a number, got %v", tok)
		}
		f, err := strconv.ParseFloat(n.String(), v.Type().Bits())
		if err != nil {
			return d.errorf(path, "%v", err)
		}
		v.SetFloat(f)
		return nil
	}
	return d.errorf(path, "unsupported Go type %s", v.Type())
}

// fieldFold finds the exported field of struct v named key, ignoring case.
func fieldFold(v reflect.Value, key string) (reflect.Value, bool) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if f.IsExported() && !f.Anonymous && strings.EqualFold(f.Name, key) {
			return v.Field(i), true
		}
	}
	return reflect.Value{}, false
}

// checkEnum rejects s when t is a smithy enum type (it has a Values method)
// that does not list s.
func checkEnum(t reflect.Type, s string) error {
	m, ok := t.MethodByName("Values")
	if !ok {
		return nil
	}
	vals := m.Func.Call([]reflect.Value{reflect.Zero(t)})[0]
	var allowed []string
	for i := range vals.Len() {
		allowed = append(allowed, vals.Index(i).String())
	}
	if !slices.Contains(allowed, s) {
		return fmt.Errorf("%q is not a valid %s (one of %s)", s, t.Name(), strings.Join(allowed, ", "))
	}
	return nil
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
