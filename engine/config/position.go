package config

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Error is one problem found in a configuration file. Load and Validate
// return several of them joined with errors.Join.
type Error struct {
	File    string // path of the configuration file, as given to Load
	Line    int    // 1-based line, 0 when unknown
	Key     string // key path such as certificate[1].domains, may be empty
	Message string
}

// Error formats the problem as "file:line: key: message".
func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Message)
	return b.String()
}

// sortByLine orders problems by line, keeping the order of problems on
// the same line and putting those without a line last.
func sortByLine(errs []error) {
	line := func(err error) int {
		var e *Error
		if errors.As(err, &e) && e.Line > 0 {
			return e.Line
		}
		return math.MaxInt
	}
	slices.SortStableFunc(errs, func(a, b error) int { return cmp.Compare(line(a), line(b)) })
}

// keyPos is where one key (or table header) appears in the file.
type keyPos struct {
	segs []string // the key as toml.Key pieces, without array indices
	path string   // display path with array indices: certificate[1].domains
	line int
}

// MaxNesting bounds how deeply keys, tables, arrays and inline tables may
// nest in a configuration file: a key's pieces (table header and dotted
// key) plus the arrays and inline tables around a value. acmehook's own
// keys nest at most 5 deep (plugins.NAME.config.KEY.secret_env); a
// plugin's config table may use the rest. The bound
// exists because BurntSushi/toml takes time quadratic in the nesting depth
// (4,000 nested inline tables, a 16 kB file, take 9 s to decode).
const MaxNesting = 32

// positions indexes where keys appear in a TOML document. BurntSushi/toml
// keeps key positions private, so this is a small scanner that understands
// just enough TOML (headers, keys, strings, arrays, inline tables, comments)
// to attribute a line to each key, and that checks MaxNesting. It runs
// before the decoder, so it must get through any input: every step
// consumes at least one byte, and nesting is bounded before it recurses.
// It never decides what else is valid; the decoder does.
type positions struct {
	keys   []keyPos
	byPath map[string]int
}

// scanPositions indexes src, the content of file. The error, when not
// nil, is an *Error naming the first line where src nests deeper than
// MaxNesting.
func scanPositions(file, src string) (*positions, error) {
	s := &scanner{src: src, line: 1, arrIdx: map[string]int{}, rec: true}
	s.run()
	p := &positions{keys: s.out, byPath: map[string]int{}}
	for _, k := range s.out {
		if _, ok := p.byPath[k.path]; !ok {
			p.byPath[k.path] = k.line
		}
	}
	if s.deep > 0 {
		return p, &Error{File: file, Line: s.deep, Message: fmt.Sprintf("keys, arrays and inline tables nest deeper than %d levels", MaxNesting)}
	}
	return p, nil
}

// checkNesting is scanPositions without the index: it only checks
// MaxNesting, at a fraction of the cost (Load runs it before decoding; the
// index is built when an error needs a line, see keyLines).
func checkNesting(file, src string) error {
	s := &scanner{src: src, line: 1}
	s.run()
	if s.deep > 0 {
		return &Error{File: file, Line: s.deep, Message: fmt.Sprintf("keys, arrays and inline tables nest deeper than %d levels", MaxNesting)}
	}
	return nil
}

// keyLines indexes a file's keys the first time a line is asked for:
// indexing them all costs about half as much as decoding the file, and
// only an error needs a line. Safe for concurrent use.
type keyLines struct {
	once      sync.Once
	file, src string
	p         *positions
}

// get returns the index; nil (every line unknown) for a nil k.
func (k *keyLines) get() *positions {
	if k == nil {
		return nil
	}
	k.once.Do(func() { k.p, _ = scanPositions(k.file, k.src) })
	return k.p
}

// line returns the line of the key at path, or of its closest enclosing
// key, or 0.
func (p *positions) line(path string) int {
	if p == nil {
		return 0
	}
	for path != "" {
		if l, ok := p.byPath[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

// nth returns the n-th (0-based) occurrence of the key segs, in document
// order, and whether it was found.
func (p *positions) nth(segs []string, n int) (keyPos, bool) {
	if p == nil {
		return keyPos{}, false
	}
	for _, k := range p.keys {
		if equalSegs(k.segs, segs) {
			if n == 0 {
				return k, true
			}
			n--
		}
	}
	return keyPos{}, false
}

func equalSegs(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// quoteSeg renders one key piece as TOML would need it written.
func quoteSeg(s string) string {
	if s == "" {
		return `""`
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return strconv.Quote(s)
		}
	}
	return s
}

type scanner struct {
	src    string
	i      int
	line   int
	table  []string // current table, plain pieces
	tpath  string   // current table, display path with indices
	arrIdx map[string]int
	out    []keyPos
	deep   int  // line where nesting first exceeded MaxNesting, or 0
	rec    bool // record the keys' positions in out (else only check nesting)
}

// tooDeep reports whether depth exceeds MaxNesting; the first time, it
// records the line and ends the scan.
func (s *scanner) tooDeep(depth int) bool {
	if depth <= MaxNesting {
		return false
	}
	if s.deep == 0 {
		s.deep = s.line
	}
	s.i = len(s.src)
	return true
}

func (s *scanner) peek() byte {
	if s.i < len(s.src) {
		return s.src[s.i]
	}
	return 0
}

func (s *scanner) advance() {
	if s.peek() == '\n' {
		s.line++
	}
	s.i++
}

func (s *scanner) skipSpace(newlines bool) {
	for s.i < len(s.src) {
		switch c := s.peek(); {
		case c == ' ' || c == '\t' || c == '\r':
			s.advance()
		case c == '\n' && newlines:
			s.advance()
		case c == '#':
			for s.i < len(s.src) && s.peek() != '\n' {
				s.advance()
			}
		default:
			return
		}
	}
}

func (s *scanner) run() {
	for s.i < len(s.src) {
		s.skipSpace(true)
		if s.i >= len(s.src) {
			return
		}
		if s.peek() == '[' {
			s.header()
			continue
		}
		line := s.line
		segs := s.key()
		if len(segs) == 0 {
			s.skipLine()
			continue
		}
		depth := len(s.table) + len(segs)
		if s.tooDeep(depth) {
			return
		}
		s.record(s.table, s.tpath, segs, line)
		s.skipSpace(false)
		if s.peek() == '=' {
			s.advance()
			s.skipSpace(false)
			var table []string
			var path string
			if s.rec && s.peek() == '{' { // only an inline table's keys are recorded
				table, path = append(append([]string{}, s.table...), segs...), joinPath(s.tpath, segs)
			}
			s.value(table, path, depth)
		}
		s.skipLine()
	}
}

func (s *scanner) skipLine() {
	for s.i < len(s.src) && s.peek() != '\n' {
		if s.peek() == '#' {
			s.skipSpace(false)
			continue
		}
		s.advance()
	}
}

func joinPath(base string, segs []string) string {
	var b strings.Builder
	b.WriteString(base)
	for _, p := range segs {
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(quoteSeg(p))
	}
	return b.String()
}

func (s *scanner) record(table []string, tpath string, segs []string, line int) {
	if !s.rec {
		return
	}
	full := append(append([]string{}, table...), segs...)
	s.out = append(s.out, keyPos{segs: full, path: joinPath(tpath, segs), line: line})
}

// header handles [a.b] and [[a.b]].
func (s *scanner) header() {
	line := s.line
	s.advance()
	array := false
	if s.peek() == '[' {
		array = true
		s.advance()
	}
	s.skipSpace(false)
	segs := s.key()
	s.skipLine()
	if s.tooDeep(len(segs)) {
		return
	}
	s.table = segs
	if !s.rec {
		return
	}
	// Rebuild the display path: every prefix that is an array of tables
	// gets its current index.
	var path strings.Builder
	for i, p := range segs {
		if i > 0 {
			path.WriteByte('.')
		}
		path.WriteString(quoteSeg(p))
		plain := strings.Join(segs[:i+1], "\x00")
		if array && i == len(segs)-1 {
			s.arrIdx[plain]++
		}
		if n, ok := s.arrIdx[plain]; ok {
			path.WriteByte('[')
			path.WriteString(strconv.Itoa(n - 1))
			path.WriteByte(']')
		}
	}
	s.tpath = path.String()
	s.out = append(s.out, keyPos{segs: segs, path: s.tpath, line: line})
}

// key reads a possibly dotted, possibly quoted key. It stops after
// MaxNesting+1 pieces, which is already too deep.
func (s *scanner) key() []string {
	var segs []string
	for len(segs) <= MaxNesting {
		s.skipSpace(false)
		switch c := s.peek(); {
		case c == '"' || c == '\'':
			segs = append(segs, s.str())
		case isBare(c):
			start := s.i
			for isBare(s.peek()) {
				s.advance()
			}
			segs = append(segs, s.src[start:s.i])
		default:
			return segs
		}
		s.skipSpace(false)
		if s.peek() != '.' {
			return segs
		}
		s.advance()
	}
	return segs
}

func isBare(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// str reads a basic, literal or multi-line string and returns its value
// (escapes are decoded only as far as keys need).
func (s *scanner) str() string {
	q := s.peek()
	delim := string(q)
	if strings.HasPrefix(s.src[s.i:], strings.Repeat(delim, 3)) {
		delim = strings.Repeat(delim, 3)
	}
	for range len(delim) {
		s.advance()
	}
	start := s.i
	for s.i < len(s.src) {
		if q == '"' && s.peek() == '\\' {
			s.advance()
			s.advance()
			continue
		}
		if strings.HasPrefix(s.src[s.i:], delim) {
			raw := s.src[start:s.i]
			for range len(delim) {
				s.advance()
			}
			// A multi-line string may end with up to two extra quotes.
			for len(delim) == 3 && s.peek() == q {
				raw += string(q)
				s.advance()
			}
			if q == '"' && len(delim) == 1 {
				if v, err := strconv.Unquote(`"` + raw + `"`); err == nil {
					return v
				}
			}
			return raw
		}
		s.advance()
	}
	return s.src[start:]
}

// value skips one value at the given nesting depth; keys of inline
// tables are recorded under the key they belong to. It may return without
// consuming anything (at a stray ']' or '}'); its loops then step over
// that byte themselves, so the scan always moves on.
func (s *scanner) value(table []string, path string, depth int) {
	switch s.peek() {
	case '"', '\'':
		s.str()
	case '[':
		if s.tooDeep(depth + 1) {
			return
		}
		s.advance()
		for s.i < len(s.src) {
			s.skipSpace(true)
			switch s.peek() {
			case ']':
				s.advance()
				return
			case ',':
				s.advance()
				continue
			}
			at := s.i
			s.value(nil, "", depth+1)
			if s.i == at {
				s.advance()
			}
		}
	case '{':
		if s.tooDeep(depth + 1) {
			return
		}
		s.advance()
		for s.i < len(s.src) {
			s.skipSpace(true)
			switch s.peek() {
			case '}':
				s.advance()
				return
			case ',':
				s.advance()
				continue
			}
			line := s.line
			segs := s.key()
			if len(segs) == 0 {
				s.advance()
				continue
			}
			sub := depth + len(segs)
			if s.tooDeep(sub) {
				return
			}
			if table != nil {
				s.record(table, path, segs, line)
			}
			s.skipSpace(false)
			if s.peek() == '=' {
				s.advance()
			}
			s.skipSpace(false)
			var subTable []string
			if table != nil {
				subTable = append(append([]string{}, table...), segs...)
			}
			var subPath string
			if table != nil {
				subPath = joinPath(path, segs)
			}
			s.value(subTable, subPath, sub)
		}
	default:
		for s.i < len(s.src) {
			c := s.peek()
			if c == ',' || c == ']' || c == '}' || c == '\n' || c == '#' {
				return
			}
			s.advance()
		}
	}
}
