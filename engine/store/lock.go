//go:build unix

package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
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

// lockFile takes an exclusive, non-blocking flock(2) on path and records the
// holder in it. The kernel releases the lock when the process exits, so a
// crashed holder never leaves the storage locked.
func lockFile(path string, now time.Time) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, fileMode)
	if err != nil {
		return nil, fmt.Errorf("opening lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w (%s): %s", ErrLocked, path, describeHolder(f))
		}
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	host, _ := os.Hostname()
	b, _ := json.Marshal(LockHolder{PID: os.Getpid(), Hostname: host, Started: now.UTC()})
	b = append(b, '\n')
	// Overwrite, then cut what an earlier holder left: a process reading
	// meanwhile never finds the file empty (describeHolder reads the
	// first JSON value and ignores a stale tail).
	_, err = f.WriteAt(b, 0)
	if err == nil {
		err = f.Truncate(int64(len(b)))
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("recording lock holder: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("recording lock holder: %w", err)
	}
	return f, nil
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

func unlockFile(f *os.File) error {
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_UN); err != nil {
		f.Close()
		return fmt.Errorf("unlocking storage: %w", err)
	}
	return f.Close()
}
