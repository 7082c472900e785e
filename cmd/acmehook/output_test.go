package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

// writeCounter counts the writes it gets, as write(2) calls to a
// terminal or pipe would be.
type writeCounter struct {
	bytes.Buffer
	writes int
}

func (w *writeCounter) Write(p []byte) (int, error) {
	w.writes++
	return w.Buffer.Write(p)
}

// TestTablesBuffered: the list table of 1,000 certificates reaches the
// output in a few large writes, not one per cell, its columns aligned.
func TestTablesBuffered(t *testing.T) {
	na := time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC)
	doc := &ListOutput{}
	for i := range 1000 {
		doc.Certificates = append(doc.Certificates, CertificateStatus{Name: fmt.Sprintf("c%04d", i), Domains: []string{fmt.Sprintf("c%04d.example.com", i)}, Next: "none", At: &na})
	}
	var w writeCounter
	if err := doc.writeTable(&w, false); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(w.String(), "\n"), "\n")
	if len(lines) != 1001 || lines[1000] != "c0999  c0999.example.com  -       -          2027-03-01 12:00 UTC  -" {
		t.Errorf("list table: %d lines, the last %q", len(lines), lines[len(lines)-1])
	}
	if max := w.Len()/(64<<10) + 1; w.writes > max {
		t.Errorf("list table of %d bytes in %d writes, want at most %d", w.Len(), w.writes, max)
	}
}
