package metrics

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// BenchmarkScrapeCertificates serves one GET /metrics (Prometheus text)
// of 10,000 certificates whose state the source already holds: the cost
// of exposing them, without reading any storage.
func BenchmarkScrapeCertificates(b *testing.B) {
	n := 10000
	if testing.Short() {
		n = 1000
	}
	na := time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC)
	certs := make([]Certificate, n)
	for i := range certs {
		certs[i] = Certificate{Name: fmt.Sprintf("s%05d", i), NotAfter: na, NextRenewal: na.Add(-720 * time.Hour), LastResult: ResultSuccess}
	}
	m := New()
	m.SetSource(source{certs: certs})
	srv := httptest.NewServer(m.Handler(nil))
	defer srv.Close()
	b.ResetTimer()
	for range b.N {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
		req.Header.Set("Accept", "text/plain")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("GET /metrics: %s, %v", resp.Status, err)
		}
		b.SetBytes(int64(len(body)))
	}
}
