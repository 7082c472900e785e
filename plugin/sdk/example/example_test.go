package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestAsVendor tests the example the way a vendor tests a plugin in their
// own repository: main.go and testdata/vendor (a module of its own whose
// tests use only sdktest, pebbletest, host and acme) are copied to a
// temporary directory, the replace is pointed at this repository, and go
// test runs there with this repository's go.sum. The module proxy stays
// as the environment sets it: the vendor module's requirements are those
// of the whole module graph, whose go.mod files a fresh machine's module
// cache does not hold until asked (a build of this repository downloads
// only the modules it compiles).
func TestAsVendor(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a separate module")
	}
	repo, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	copyFile(t, "main.go", filepath.Join(dir, "main.go"))
	copyFile(t, "testdata/vendor/main_test.go", filepath.Join(dir, "main_test.go"))
	copyFile(t, filepath.Join(repo, "go.sum"), filepath.Join(dir, "go.sum"))
	mod, err := os.ReadFile("testdata/vendor/go.mod")
	if err != nil {
		t.Fatal(err)
	}
	mod = bytes.Replace(mod, []byte("=> ../../../../.."), []byte("=> "+repo), 1)
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), mod, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "test", "-count=1", "-mod=mod", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go test in the vendor module: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "ok  \texample.com/vendor/exampledns") {
		t.Errorf("go test in the vendor module printed %s", out)
	}
}

// TestDocsShowExample: docs/plugins.md shows this file as it is.
func TestDocsShowExample(t *testing.T) {
	src, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../../../docs/plugins.md")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(doc, append(append([]byte("```go\n"), src...), "```"...)) {
		t.Error("docs/plugins.md does not show plugin/sdk/example/main.go as it is")
	}
	if n := bytes.Count(src, []byte("\n")); n > 40 {
		t.Errorf("the example is %d lines, want at most 40", n)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
