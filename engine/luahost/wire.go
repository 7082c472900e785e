package luahost

import (
	"encoding/json"
	"log/slog"

	"github.com/acmehook/acmehook/engine/event"
)

// The protocol between a Host and its script host processes: one JSON
// value per line in each direction. The Host writes a runConfig and then,
// one at a time, runRequests (and a cancel while one is running) to the
// child's stdin; the child answers each request with any number of log
// records followed by one runDone on its stdout. Closing the child's stdin
// tells it to exit. Everything that may show where a crashed or killed
// child was goes through the position page instead (see tracker).

// runConfig is what every run in one child shares; it is the first line
// the child reads.
type runConfig struct {
	LibDir        string            `json:"lib_dir,omitempty"`
	Vars          map[string]string `json:"vars,omitempty"`
	CallStackSize int               `json:"call_stack_size"`
	MemoryLimit   int64             `json:"memory_limit"`
	OutputLimit   int               `json:"output_limit"`
	// LogLevel is the lowest level the Host's logger records; the child
	// sends nothing below it.
	LogLevel slog.Level `json:"log_level"`
}

// toChild is one line from the Host.
type toChild struct {
	Run    *runRequest `json:"run,omitempty"`
	Cancel bool        `json:"cancel,omitempty"`
}

// runRequest asks the child to dispatch Event to Script, stopping at
// Deadline (Unix nanoseconds).
type runRequest struct {
	Script   string      `json:"script"`
	Event    event.Event `json:"event"`
	Deadline int64       `json:"deadline"`
}

// fromChild is one line from the child.
type fromChild struct {
	Log  *logRecord `json:"log,omitempty"`
	Done *runDone   `json:"done,omitempty"`
}

// logRecord is a record logged by the script, without the script and
// event attributes (the Host adds those).
type logRecord struct {
	Level slog.Level `json:"level"`
	Msg   string     `json:"msg"`
	Attrs []logAttr  `json:"attrs,omitempty"`
}

// logAttr keeps an attribute's kind, which JSON numbers would lose.
type logAttr struct {
	Key   string          `json:"k"`
	Kind  string          `json:"t"` // "s", "i", "f" or "b"
	Value json.RawMessage `json:"v"`
}

// runDone ends a run: Error is nil when the script succeeded.
type runDone struct {
	Error *wireError `json:"error,omitempty"`
}

// wireError is a ScriptError without the fields the Host already knows.
type wireError struct {
	Line      int    `json:"line,omitempty"`
	Message   string `json:"message"`
	Traceback string `json:"traceback,omitempty"`
	// Cause names ScriptError.Err: one of the cause* constants, or empty.
	Cause string `json:"cause,omitempty"`
	// Detail is the text of a cause that is a file error.
	Detail string `json:"detail,omitempty"`
}

const (
	causeDeadline   = "deadline"
	causeCanceled   = "canceled"
	causeMemory     = "memory"
	causeNotExist   = "not-exist"
	causePermission = "permission"
	causeFile       = "file"
)
