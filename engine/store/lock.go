//go:build unix

package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// LockHolder is what the lock file records about the process holding it.
type LockHolder struct {
	PID      int       `json:"pid"`
	Hostname string    `json:"hostname"`
	Started  time.Time `json:"started"`
	// Token is the fencing token of this holder's lock (Lock.Token).
	Token uint64 `json:"token,omitempty"`
}

func (h LockHolder) String() string {
	return fmt.Sprintf("pid %d on %s since %s", h.PID, h.Hostname, h.Started.UTC().Format(time.RFC3339))
}

func describeHolder(f *os.File) string {
	b, err := io.ReadAll(io.NewSectionReader(f, 0, 4096))
	if err != nil || len(b) == 0 {
		return "holder unknown"
	}
	var h LockHolder
	if err := json.NewDecoder(bytes.NewReader(b)).Decode(&h); err != nil {
		return "holder recorded as " + strings.TrimSpace(string(b))
	}
	return "held by " + h.String()
}
