package metrics

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func TestProblemType(t *testing.T) {
	for _, tc := range []struct{ typ, want string }{
		{"urn:ietf:params:acme:error:badNonce", "badNonce"},
		{"urn:ietf:params:acme:error:rateLimited", "rateLimited"},
		{"urn:ietf:params:acme:error:", "other"},
		{"https://ca.example/problems/quota", "other"},
		{"", "other"},
		{"urn:ietf:params:acme:error:a:b", "other"},
	} {
		m := New()
		m.problem(tc.typ)
		var d dto.Metric
		if err := m.acmeProblems.WithLabelValues(tc.want).Write(&d); err != nil {
			t.Fatal(err)
		}
		if got := d.GetCounter().GetValue(); got != 1 {
			t.Errorf("problem %q: counted %v under %q, want 1", tc.typ, got, tc.want)
		}
	}
}

func TestAlternate(t *testing.T) {
	for _, tc := range []struct {
		link, want string
		ok         bool
	}{
		{`<https://ca.example/cert/1/1>;rel="alternate"`, "https://ca.example/cert/1/1", true},
		{`<https://ca.example/cert/1/1>; rel=alternate`, "https://ca.example/cert/1/1", true},
		{`<https://ca.example/dir>;rel="index"`, "", false},
		{`<https://ca.example/dir>;rel="index", </cert/2>;rel="alternate"`, "/cert/2", true},
		{`garbage`, "", false},
	} {
		got, ok := alternate(tc.link)
		if got != tc.want || ok != tc.ok {
			t.Errorf("alternate(%q) = %q, %v; want %q, %v", tc.link, got, ok, tc.want, tc.ok)
		}
	}
}

type source struct {
	certs []Certificate
	err   error
}

func (s source) CertificateMetrics(context.Context) []Certificate { return s.certs }
func (s source) Ready(context.Context) error                      { return s.err }

// TestWriteFile: the file parses with Prometheus's text parser, holds the
// source's certificates, replaces the previous file and leaves no
// temporary file.
func TestWriteFile(t *testing.T) {
	m := New()
	if err := m.Ready(context.Background()); !errors.Is(err, ErrNotLoaded) {
		t.Errorf("Ready without a source = %v, want ErrNotLoaded", err)
	}
	na := time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC)
	m.SetSource(source{certs: []Certificate{
		{Name: "www", NotAfter: na, NextRenewal: na.Add(-720 * time.Hour), LastResult: ResultFailure, Failures: 2, Held: HeldBackoff},
		{Name: "broken", Err: errors.New("unreadable")},
	}})
	m.Run(true, na)
	dir := t.TempDir()
	path := filepath.Join(dir, "acmehook.prom")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(f)
	if err != nil {
		t.Fatalf("parsing the file: %v", err)
	}
	get := func(name string, labels map[string]string) float64 {
		for _, mm := range mfs[name].GetMetric() {
			match := 0
			for _, l := range mm.GetLabel() {
				if labels[l.GetName()] == l.GetValue() {
					match++
				}
			}
			if match == len(labels) {
				return mm.GetGauge().GetValue() + mm.GetCounter().GetValue()
			}
		}
		t.Errorf("%s%v missing", name, labels)
		return -1
	}
	www := map[string]string{"certificate": "www"}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"acmehook_certificate_not_after_timestamp_seconds", www, float64(na.Unix())},
		{"acmehook_certificate_next_renewal_timestamp_seconds", www, float64(na.Add(-720 * time.Hour).Unix())},
		{"acmehook_certificate_consecutive_failures", www, 2},
		{"acmehook_certificate_last_result", map[string]string{"certificate": "www", "result": "failure"}, 1},
		{"acmehook_certificate_last_result", map[string]string{"certificate": "www", "result": "success"}, 0},
		{"acmehook_certificate_held", map[string]string{"certificate": "www", "reason": "backoff"}, 1},
		{"acmehook_certificate_held", map[string]string{"certificate": "www", "reason": "guard"}, 0},
		{"acmehook_certificate_state_error", map[string]string{"certificate": "broken"}, 1},
		{"acmehook_certificates", nil, 2},
		{"acmehook_runs_total", map[string]string{"result": "success"}, 1},
		{"acmehook_last_successful_run_timestamp_seconds", nil, float64(na.Unix())},
	} {
		if got := get(tc.name, tc.labels); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	if _, ok := mfs["acmehook_certificate_not_after_timestamp_seconds"]; ok {
		for _, mm := range mfs["acmehook_certificate_not_after_timestamp_seconds"].GetMetric() {
			if mm.GetLabel()[0].GetValue() == "broken" {
				t.Error("an unreadable certificate has a not-after")
			}
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("directory holds %d entries, want only the metrics file", len(ents))
	}
}
