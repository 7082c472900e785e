package config

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestScanPositions feeds the key scanner the TOML constructs that could
// confuse a line-based reader and checks the line it gives each key.
func TestScanPositions(t *testing.T) {
	src := `# [not] = "a table"
top = """
[fake]
fake = 1
"""
lit = '''x = ['''
arr = [
  "a", # ] not the end
  { inline = 1 },
]
"quoted key".dotted = 'v'   # comment

[[certificate]]
name = "a"
[certificate.solvers]
"*.example.com" = "dns"

[[certificate]]
name = "b"
solvers = { "x.example.com" = "web", y = { z = 1 } }
esc = "quote \" [ ] # inside"
after = 1
`
	p, err := scanPositions("f.toml", src)
	if err != nil {
		t.Fatalf("scanPositions: %v", err)
	}
	want := map[string]int{
		"top":                                    2,
		"lit":                                    6,
		"arr":                                    7,
		`"quoted key".dotted`:                    11,
		"certificate[0]":                         13,
		"certificate[0].name":                    14,
		"certificate[0].solvers":                 15,
		`certificate[0].solvers."*.example.com"`: 16,
		"certificate[1].name":                    19,
		`certificate[1].solvers."x.example.com"`: 20,
		"certificate[1].solvers.y.z":             20,
		"certificate[1].esc":                     21,
		"certificate[1].after":                   22,
		"certificate[1].domains[3]":              18, // falls back to the enclosing table
	}
	got := map[string]int{}
	for path := range want {
		got[path] = p.line(path)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("positions (-want +got):\n%s", diff)
	}
	if l := p.line("fake"); l != 0 {
		t.Errorf("line(fake) = %d, want 0: a key inside a multi-line string was indexed", l)
	}
}
