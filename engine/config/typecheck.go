package config

import (
	"encoding"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/acmehook/acmehook/engine/renewal"
)

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

// typeChecker finds every value of a loosely decoded document that does
// not fit the Config field it would fill. BurntSushi/toml stops at the
// first such value, so Load checks the whole document first, reports each
// misfit with its line, removes it, and decodes the rest: the other
// problems of the file are still found in the same pass.
type typeChecker struct {
	c    *Config
	errs []error
	bad  map[string]bool // display paths of the removed values
}

// tomlField is a struct field a TOML key fills.
type tomlField struct {
	name string // its key
	typ  reflect.Type
}

// tomlFields caches the fields of each struct type: a file of 10,000
// certificates checks the same fields 10,000 times.
var tomlFields sync.Map // reflect.Type -> []tomlField

func fieldsOf(t reflect.Type) []tomlField {
	if fs, ok := tomlFields.Load(t); ok {
		return fs.([]tomlField)
	}
	var fs []tomlField
	for i := range t.NumField() {
		f := t.Field(i)
		if name := f.Tag.Get("toml"); name != "" && name != "-" {
			fs = append(fs, tomlField{name, f.Type})
		}
	}
	tomlFields.Store(t, fs)
	return fs
}

// textTypes caches whether a type decodes from a string through
// encoding.TextUnmarshaler.
var textTypes sync.Map // reflect.Type -> bool

func isText(t reflect.Type) bool {
	if ok, found := textTypes.Load(t); found {
		return ok.(bool)
	}
	ok := reflect.PointerTo(t).Implements(textUnmarshaler)
	textTypes.Store(t, ok)
	return ok
}

// table checks the keys of m against the fields of struct type t and
// deletes the ones whose value does not fit. Unknown keys are left for
// the strict decoder to report.
func (tc *typeChecker) table(t reflect.Type, m map[string]any, path string) {
	for _, f := range fieldsOf(t) {
		v, ok := m[f.name]
		if !ok {
			continue
		}
		if !tc.value(f.typ, v, joinKey(path, quoteSeg(f.name))) {
			delete(m, f.name)
		}
	}
}

// value reports whether v fits type t, recording an error for each misfit
// found inside it. Misfits inside a table are deleted from it; a misfit
// inside an array makes the whole array unfit.
func (tc *typeChecker) value(t reflect.Type, v any, path string) bool {
	if t == reflect.TypeFor[time.Time]() {
		tv, ok := v.(time.Time)
		if !ok {
			return tc.misfit(path, v, "datetime")
		}
		switch tv.Location().String() {
		case "datetime-local", "date-local", "time-local":
			return tc.fail(path, "a date-time needs its offset (\"2027-01-31T00:00:00Z\")")
		}
		return true
	}
	if isText(t) {
		s, ok := v.(string)
		if !ok {
			return tc.misfit(path, v, "string")
		}
		if err := reflect.New(t).Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(s)); err != nil {
			// The key already says what the value is for.
			return tc.fail(path, strings.TrimPrefix(err.Error(), renewal.ErrRenewBefore.Error()+": "))
		}
		return true
	}
	switch t.Kind() {
	case reflect.Pointer:
		return tc.value(t.Elem(), v, path)
	case reflect.Interface:
		return true
	case reflect.String:
		if _, ok := v.(string); !ok {
			return tc.misfit(path, v, "string")
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			return tc.misfit(path, v, "boolean")
		}
	case reflect.Int, reflect.Int64:
		if _, ok := v.(int64); !ok {
			return tc.misfit(path, v, "integer")
		}
	case reflect.Slice:
		var elems []any
		switch s := v.(type) {
		case []any:
			elems = s
		case []map[string]any:
			for _, e := range s {
				elems = append(elems, e)
			}
		default:
			return tc.misfit(path, v, "array")
		}
		ok := true
		for i, e := range elems {
			ok = tc.value(t.Elem(), e, path+"["+strconv.Itoa(i)+"]") && ok
		}
		return ok
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			return tc.misfit(path, v, "table")
		}
		for _, k := range sortedKeys(m) {
			if !tc.value(t.Elem(), m[k], joinKey(path, quoteSeg(k))) {
				delete(m, k)
			}
		}
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return tc.misfit(path, v, "table")
		}
		tc.table(t, m, path)
	}
	return true
}

func (tc *typeChecker) misfit(path string, v any, want string) bool {
	return tc.fail(path, fmt.Sprintf("incompatible types: TOML value has type %s; destination has type %s", tomlType(v), want))
}

func (tc *typeChecker) fail(path, msg string) bool {
	tc.errs = append(tc.errs, tc.c.errorf(path, "%s", msg))
	tc.bad[path] = true
	return false
}

func joinKey(path, seg string) string {
	if path == "" {
		return seg
	}
	return path + "." + seg
}

// tomlType names the TOML type of a loosely decoded value.
func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case bool:
		return "boolean"
	case int64:
		return "integer"
	case float64:
		return "float"
	case time.Time:
		return "datetime"
	case []any, []map[string]any:
		return "array"
	case map[string]any:
		return "table"
	}
	return fmt.Sprintf("%T", v)
}
