package store

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// BenchmarkList10000 reads what `acmehook list` reads for 10,000
// certificates: the names, then each one's current version and metadata
// (LoadCurrent, as the engine's per-certificate job does).
// The storage is laid out with plain file writes (a Commit syncs every file,
// which would make the setup take minutes); the reads are the Store's.
func BenchmarkList10000(b *testing.B) {
	n := 10000
	if testing.Short() {
		n = 1000
	}
	dir := filepath.Join(b.TempDir(), "storage")
	v := fakeVersion("0a1b")
	info, _ := json.Marshal(v.Info)
	meta := []byte(`{"renewal":{"ari_next_fetch":"2026-12-01T10:00:00Z"},"events":[{"time":"2026-12-01T10:00:00Z","name":"issued","result":"ok"}]}`)
	const id = "20261128T120000Z-0a1b"
	for i := range n {
		cdir := filepath.Join(dir, certsDir, fmt.Sprintf("cert-%05d", i))
		vdir := filepath.Join(cdir, versionsDir, id)
		if err := os.MkdirAll(vdir, 0o700); err != nil {
			b.Fatal(err)
		}
		for name, data := range map[string][]byte{keyFile: v.KeyPEM, certFile: v.CertPEM, chainFile: v.ChainPEM, fullchainFile: v.Fullchain(), versionFile: info, metaFile: meta} {
			if err := os.WriteFile(filepath.Join(vdir, name), data, 0o600); err != nil {
				b.Fatal(err)
			}
		}
		if err := os.Symlink(versionsDir+"/"+id, filepath.Join(cdir, currentLink)); err != nil {
			b.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		b.Fatal(err)
	}
	s, err := OpenReadOnly(dir, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	var before syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	b.ResetTimer()
	for range b.N {
		names, err := s.Names(ctx)
		if err != nil || len(names) != n {
			b.Fatalf("Names = %d, %v", len(names), err)
		}
		for _, name := range names {
			if _, _, err := s.LoadCurrent(ctx, name); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	var after syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	cpu := time.Duration(after.Utime.Nano()+after.Stime.Nano()-before.Utime.Nano()-before.Stime.Nano()) / time.Duration(b.N)
	// CPU time, unlike wall time, does not depend on what else the
	// machine runs.
	b.ReportMetric(float64(cpu.Milliseconds()), "cpu-ms/list")
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/list")
}

// BenchmarkIssuanceWrites is what storing one new certificate writes, as
// the engine does for a first issuance: the metadata with the reissue
// guard's count before the order, then the version with its metadata (a
// Commit), for b.N certificates by 8 workers (the engine's default
// concurrency). It reports the CPU time (user+system: creating, syncing
// and renaming the files) per issuance.
func BenchmarkIssuanceWrites(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "storage"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	meta := []byte(`{"renewal":{"orders":["2026-12-01T10:00:00Z"]},"events":[{"time":"2026-12-01T10:00:00Z","name":"issued","result":"ok"}]}`)
	var before syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	workers := 8
	if w, err := strconv.Atoi(os.Getenv("ACMEHOOK_BENCH_WORKERS")); err == nil {
		workers = w
	}
	names := make(chan string)
	errs := make(chan error, workers)
	b.ResetTimer()
	for range workers {
		go func() {
			var err error
			for name := range names {
				if err == nil {
					err = s.SaveState(ctx, name, meta[:40])
				}
				if err == nil {
					err = s.Commit(ctx, name, fakeVersion("0a1b"), meta)
				}
			}
			errs <- err
		}()
	}
	for i := range b.N {
		names <- fmt.Sprintf("cert-%06d", i)
	}
	close(names)
	for range workers {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	var after syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	cpu := time.Duration(after.Utime.Nano()+after.Stime.Nano()-before.Utime.Nano()-before.Stime.Nano()) / time.Duration(b.N)
	b.ReportMetric(float64(cpu.Microseconds()), "cpu-µs/issuance")
}
