package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// TestDocLinks checks every relative link of README.md and docs/*.md: the
// file it names exists and, with a #fragment, a Markdown file has a heading
// with that anchor as GitHub derives it (lower case, spaces to dashes,
// punctuation dropped, "-1", "-2"… for repeated headings). Links in code
// are not links.
func TestDocLinks(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(repoRoot, "docs", "*.md"))
	files = append(files, filepath.Join(repoRoot, "README.md"))
	checked := 0
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(repoRoot, file)
		for _, l := range docLinks(string(data)) {
			if strings.Contains(l.target, "://") || strings.HasPrefix(l.target, "mailto:") {
				continue
			}
			checked++
			path, frag, _ := strings.Cut(l.target, "#")
			dest := file
			if path != "" {
				dest = filepath.Join(filepath.Dir(file), filepath.FromSlash(path))
				if _, err := os.Stat(dest); err != nil {
					t.Errorf("%s:%d: link %s: no such file", rel, l.line, l.target)
					continue
				}
			}
			if frag != "" && strings.HasSuffix(dest, ".md") && !headingAnchors(t, dest)[frag] {
				t.Errorf("%s:%d: link %s: no heading with anchor #%s in %s", rel, l.line, l.target, frag, filepath.Base(dest))
			}
		}
	}
	if checked < 10 {
		t.Errorf("checked %d relative links, want the docs' links found", checked)
	}
}

type docLink struct {
	target string
	line   int
}

var (
	linkRE = regexp.MustCompile(`\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)
	codeRE = regexp.MustCompile("`[^`]*`")
)

// docLinks returns the inline link targets of a Markdown text, outside
// fenced code blocks and code spans.
func docLinks(text string) []docLink {
	var out []docLink
	inFence := false
	for i, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			inFence = !inFence
			continue
		}
		if inFence {
			continue
		}
		for _, m := range linkRE.FindAllStringSubmatch(codeRE.ReplaceAllString(l, ""), -1) {
			out = append(out, docLink{target: m[1], line: i + 1})
		}
	}
	return out
}

var anchorCache = map[string]map[string]bool{}

// headingAnchors returns the anchors of file's headings.
func headingAnchors(t *testing.T, file string) map[string]bool {
	if a, ok := anchorCache[file]; ok {
		return a
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	a := map[string]bool{}
	inFence := false
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			inFence = !inFence
		}
		if inFence || !strings.HasPrefix(l, "#") {
			continue
		}
		anchor := slug(strings.TrimLeft(l, "#"))
		for n, try := 0, anchor; ; n++ {
			if !a[try] {
				a[try] = true
				break
			}
			try = fmt.Sprintf("%s-%d", anchor, n+1)
		}
	}
	anchorCache[file] = a
	return a
}

// slug is GitHub's anchor of a heading's text.
func slug(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// TestSlug pins the anchor rule to GitHub's on headings of these docs.
func TestSlug(t *testing.T) {
	for heading, want := range map[string]string{
		" Bounded orders":                       "bounded-orders",
		" `[ca]` — the CA":                      "ca--the-ca",
		" Writing a plugin (Go)":                "writing-a-plugin-go",
		" A script cannot take acmehook down":   "a-script-cannot-take-acmehook-down",
		" The Backend contract":                 "the-backend-contract",
		" Renewal: when, and what is held back": "renewal-when-and-what-is-held-back",
	} {
		if got := slug(heading); got != want {
			t.Errorf("slug(%q) = %q, want %q", heading, got, want)
		}
	}
}
