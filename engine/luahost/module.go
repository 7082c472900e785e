package luahost

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"sort"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"

	"github.com/acmehook/acmehook/engine/event"
)

// module is the acmehook Lua module for one run: its dependencies come from
// the Host, its handlers are collected by acmehook.on.
type module struct {
	cfg  *runConfig
	log  *slog.Logger
	tr   *tracker
	http *http.Client
	// execLimit is the soft RLIMIT_AS that acmehook.exec restores for the
	// programs it starts, through the exec trampoline; empty: the script
	// host did not lower it, programs start directly.
	execLimit string
	script    string
	event     event.Type
	handlers  map[event.Type][]*lua.LFunction
}

// table builds the module table with an explicit function list. Every
// function is tracked (see tracker): each can block or allocate in Go.
func (m *module) table(L *lua.LState) *lua.LTable {
	set := func(t *lua.LTable, prefix string, fns map[string]lua.LGFunction) {
		for name, fn := range fns {
			t.RawSetString(name, m.tracked(L, "acmehook."+prefix+name, L.NewFunction(fn)))
		}
	}
	mod := L.NewTable()
	set(mod, "", map[string]lua.LGFunction{
		"on":    m.on,
		"exec":  m.exec,
		"sleep": m.sleep,
	})
	sub := func(name string, fns map[string]lua.LGFunction) {
		t := L.NewTable()
		set(t, name+".", fns)
		mod.RawSetString(name, t)
	}
	sub("log", map[string]lua.LGFunction{
		"debug": m.logAt(slog.LevelDebug),
		"info":  m.logAt(slog.LevelInfo),
		"warn":  m.logAt(slog.LevelWarn),
		"error": m.logAt(slog.LevelError),
	})
	sub("files", map[string]lua.LGFunction{
		"read":   m.fileRead,
		"write":  m.fileWrite,
		"copy":   m.fileCopy,
		"mkdir":  m.fileMkdir,
		"exists": m.fileExists,
		"remove": m.fileRemove,
	})
	sub("http", map[string]lua.LGFunction{"request": m.httpRequest})
	sub("json", map[string]lua.LGFunction{"encode": m.jsonEncode, "decode": m.jsonDecode})
	sub("x509", map[string]lua.LGFunction{"parse": m.x509Parse})
	sub("tls", map[string]lua.LGFunction{"probe": m.tlsProbe})

	vars := L.CreateTable(0, len(m.cfg.Vars))
	for k, v := range m.cfg.Vars {
		vars.RawSetString(k, lua.LString(v))
	}
	mod.RawSetString("vars", vars)
	events := L.CreateTable(len(event.Types), 0)
	for _, e := range event.Types {
		events.Append(lua.LString(e))
	}
	mod.RawSetString("events", events)
	return mod
}

// fail is the runtime-failure convention: return nil, message.
func fail(L *lua.LState, err error) int {
	L.Push(lua.LNil)
	L.Push(lua.LString(err.Error()))
	return 2
}

// ctx returns the run's context, raising if it is already done so that no
// Go function starts work after the deadline.
func (m *module) ctx(L *lua.LState) context.Context {
	ctx := L.Context()
	if err := ctx.Err(); err != nil {
		L.RaiseError("%v", err)
	}
	return ctx
}

// on(event, handler) subscribes handler to event; an unknown event raises.
func (m *module) on(L *lua.LState) int {
	name := event.Type(L.CheckString(1))
	fn := L.CheckFunction(2)
	if !name.Valid() {
		L.ArgError(1, fmt.Sprintf("unknown event %q (known: %s)", name, eventList()))
	}
	m.handlers[name] = append(m.handlers[name], fn)
	return 0
}

func eventList() string {
	s := make([]string, len(event.Types))
	for i, e := range event.Types {
		s[i] = string(e)
	}
	return strings.Join(s, ", ")
}

// sleep(seconds) pauses, returning early with nil, err at the deadline.
func (m *module) sleep(L *lua.LState) int {
	ctx := m.ctx(L)
	d := durationArg(L, 1, 0)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		L.Push(lua.LTrue)
		return 1
	case <-ctx.Done():
		return fail(L, fmt.Errorf("sleeping: %w", ctx.Err()))
	}
}

// durationArg reads argument n as seconds (number) or a Go duration string
// ("1m30s"); absent means def.
func durationArg(L *lua.LState, n int, def time.Duration) time.Duration {
	return durationValue(L, L.Get(n), n, def)
}

func durationValue(L *lua.LState, v lua.LValue, argn int, def time.Duration) time.Duration {
	switch v := v.(type) {
	case *lua.LNilType:
		return def
	case lua.LNumber:
		if v < 0 || math.IsNaN(float64(v)) || float64(v) > math.MaxInt64/float64(time.Second) {
			L.ArgError(argn, "duration out of range")
		}
		return time.Duration(float64(v) * float64(time.Second))
	case lua.LString:
		d, err := time.ParseDuration(string(v))
		if err != nil || d < 0 {
			L.ArgError(argn, fmt.Sprintf("invalid duration %q", string(v)))
		}
		return d
	}
	L.ArgError(argn, "duration must be seconds or a string like \"30s\"")
	return 0
}

// logAt returns log.<level>(message, [fields]).
func (m *module) logAt(level slog.Level) lua.LGFunction {
	return func(L *lua.LState) int {
		ctx := m.ctx(L)
		msg := L.CheckString(1)
		fields := L.OptTable(2, nil)
		if !m.log.Enabled(ctx, level) {
			return 0
		}
		m.log.Log(ctx, level, msg, fieldAttrs(fields)...)
		return 0
	}
}

func fieldAttrs(t *lua.LTable) []any {
	if t == nil {
		return nil
	}
	var attrs []slog.Attr
	t.ForEach(func(k, v lua.LValue) {
		key := lua.LVAsString(k)
		if key == "" {
			key = k.String()
		}
		switch v := v.(type) {
		case lua.LString:
			attrs = append(attrs, slog.String(key, string(v)))
		case lua.LNumber:
			if f := float64(v); f == math.Trunc(f) && math.Abs(f) < 1<<53 {
				attrs = append(attrs, slog.Int64(key, int64(f)))
			} else {
				attrs = append(attrs, slog.Float64(key, f))
			}
		case lua.LBool:
			attrs = append(attrs, slog.Bool(key, bool(v)))
		default:
			attrs = append(attrs, slog.String(key, v.String()))
		}
	})
	sort.Slice(attrs, func(i, j int) bool { return attrs[i].Key < attrs[j].Key })
	out := make([]any, len(attrs))
	for i, a := range attrs {
		out[i] = a
	}
	return out
}

// print logs its arguments at Info, joined by tabs, like Lua's print.
func (m *module) print(L *lua.LState) int {
	ctx := m.ctx(L)
	parts := make([]string, L.GetTop())
	for i := range parts {
		parts[i] = L.ToStringMeta(L.Get(i + 1)).String()
	}
	m.log.InfoContext(ctx, strings.Join(parts, "\t"))
	return 0
}

// Bounds of json.encode: nesting, and values in all, so that a table
// shared many times over (t = {t, t}, 40 times) is refused at once rather
// than expanded into 2^40 values.
const (
	maxJSONDepth  = 64
	maxJSONValues = 1 << 20
)

// json.encode(value) -> string | nil, err. Tables with keys 1..n (n > 0)
// become arrays, other tables objects with string keys.
func (m *module) jsonEncode(L *lua.LState) int {
	m.ctx(L)
	budget := maxJSONValues
	v, err := toGo(L.CheckAny(1), 0, &budget)
	if err != nil {
		return fail(L, fmt.Errorf("encoding json: %w", err))
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fail(L, fmt.Errorf("encoding json: %w", err))
	}
	L.Push(lua.LString(b))
	return 1
}

func toGo(v lua.LValue, depth int, budget *int) (any, error) {
	if depth > maxJSONDepth {
		return nil, errors.New("nested too deeply (cycle?)")
	}
	if *budget--; *budget < 0 {
		return nil, fmt.Errorf("more than %d values (a table shared many times is encoded once per reference)", maxJSONValues)
	}
	switch v := v.(type) {
	case *lua.LNilType:
		return nil, nil
	case lua.LBool:
		return bool(v), nil
	case lua.LNumber:
		f := float64(v)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("number %v has no json form", f)
		}
		return f, nil
	case lua.LString:
		return string(v), nil
	case *lua.LTable:
		if n := v.Len(); n > 0 && v.MaxN() == n && countKeys(v) == n {
			arr := make([]any, n)
			for i := 1; i <= n; i++ {
				e, err := toGo(v.RawGetInt(i), depth+1, budget)
				if err != nil {
					return nil, err
				}
				arr[i-1] = e
			}
			return arr, nil
		}
		obj := map[string]any{}
		var err error
		v.ForEach(func(k, val lua.LValue) {
			if err != nil {
				return
			}
			var key string
			switch k := k.(type) {
			case lua.LString:
				key = string(k)
			case lua.LNumber:
				key = k.String()
			default:
				err = fmt.Errorf("table key of type %s has no json form", k.Type())
				return
			}
			obj[key], err = toGo(val, depth+1, budget)
		})
		return obj, err
	}
	return nil, fmt.Errorf("value of type %s has no json form", v.Type())
}

func countKeys(t *lua.LTable) int {
	n := 0
	t.ForEach(func(lua.LValue, lua.LValue) { n++ })
	return n
}

// json.decode(text) -> value | nil, err. JSON null becomes nil.
func (m *module) jsonDecode(L *lua.LState) int {
	m.ctx(L)
	var v any
	if err := json.Unmarshal([]byte(L.CheckString(1)), &v); err != nil {
		return fail(L, fmt.Errorf("decoding json: %w", err))
	}
	L.Push(toLua(L, v))
	return 1
}

func toLua(L *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []any:
		t := L.CreateTable(len(v), 0)
		for _, e := range v {
			t.Append(toLua(L, e))
		}
		return t
	case map[string]any:
		t := L.CreateTable(0, len(v))
		for k, e := range v {
			t.RawSetString(k, toLua(L, e))
		}
		return t
	}
	return lua.LNil
}

// x509.parse(pem) -> info | nil, err for the first CERTIFICATE block.
func (m *module) x509Parse(L *lua.LState) int {
	m.ctx(L)
	data := []byte(L.CheckString(1))
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return fail(L, errors.New("parsing certificate: no CERTIFICATE block in PEM"))
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return fail(L, fmt.Errorf("parsing certificate: %w", err))
		}
		L.Push(certTable(L, c))
		return 1
	}
}

// certTable describes c for scripts: subject, common_name, issuer, serial
// (lowercase hex), not_before / not_after (Unix seconds), dns_names,
// ip_addresses, is_ca, fingerprint_sha256 (lowercase hex of the DER).
func certTable(L *lua.LState, c *x509.Certificate) *lua.LTable {
	t := L.CreateTable(0, 10)
	t.RawSetString("subject", lua.LString(c.Subject.String()))
	t.RawSetString("common_name", lua.LString(c.Subject.CommonName))
	t.RawSetString("issuer", lua.LString(c.Issuer.String()))
	t.RawSetString("serial", lua.LString(c.SerialNumber.Text(16)))
	t.RawSetString("not_before", lua.LNumber(c.NotBefore.Unix()))
	t.RawSetString("not_after", lua.LNumber(c.NotAfter.Unix()))
	names := L.CreateTable(len(c.DNSNames), 0)
	for _, n := range c.DNSNames {
		names.Append(lua.LString(n))
	}
	t.RawSetString("dns_names", names)
	ips := L.CreateTable(len(c.IPAddresses), 0)
	for _, ip := range c.IPAddresses {
		ips.Append(lua.LString(ip.String()))
	}
	t.RawSetString("ip_addresses", ips)
	t.RawSetString("is_ca", lua.LBool(c.IsCA))
	sum := sha256.Sum256(c.Raw)
	t.RawSetString("fingerprint_sha256", lua.LString(hex.EncodeToString(sum[:])))
	return t
}
