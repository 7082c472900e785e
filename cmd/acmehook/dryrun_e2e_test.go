package main

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/acmehook/acmehook/engine/store"
	"github.com/acmehook/acmehook/internal/testetcd"
)

// treeHash describes every file and directory under dir: its path, mode
// and, for a file, the SHA-256 of its bytes, one per line, sorted.
func treeHash(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		line := fmt.Sprintf("%s %s", rel, fi.Mode())
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			line += fmt.Sprintf(" %x", sha256.Sum256(b))
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// TestE2EDryRun: run --dry-run with the real binary against Pebble, which
// has no staging directory. A certificate in service is renewed and one
// never issued is issued, by a throwaway account (one newAccount although
// an account is stored), with the storage lock held by another process;
// the scripts see dry_run = true; the storage's tree hash (paths, modes,
// bytes) is unchanged, no output copy is written (the output says where
// they would have gone), no temporary storage is left, and the output
// says nothing was saved. issue --dry-run NAME orders from
// staging_directory when it is set (the configured directory is then
// never contacted); a failing certificate exits 1 as a real run does.
func TestE2EDryRun(t *testing.T) {
	s := newSite(t)
	out := filepath.Join(s.work.Dir, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	certs := `
[[certificate]]
name = "live"
domains = ["live.dry.example.com"]
solver = "webroot"
scripts = ["events.lua"]
[certificate.output]
fullchain = "out/live.fullchain.pem"
key = "out/live.key.pem"
`
	s.write(certs)
	if o := s.acmehook("run"); o.code != 0 {
		t.Fatalf("acmehook run: %s", o)
	}
	live, _ := s.stored("live", []string{"live.dry.example.com"})
	if err := os.RemoveAll(s.work.Events); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(s.work.Events, 0o755); err != nil {
		t.Fatal(err)
	}
	certs += `
[[certificate]]
name = "fresh"
domains = ["fresh.dry.example.com"]
solver = "webroot"
scripts = ["events.lua"]
[certificate.output]
cert = "out/fresh.cert.pem"
`
	s.write(certs)
	// Another process holds the storage lock throughout, as the daemon
	// would (taking it writes the lock's record: before that is hashed).
	storage := filepath.Join(s.work.Dir, "storage")
	held, err := store.Open(storage, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	before, outBefore := treeHash(t, storage), treeHash(t, out)
	tmp := t.TempDir()
	pebble.Counter().Reset()
	metricsFile := filepath.Join(s.work.Dir, "acmehook.prom")
	cmd := s.command("run", "--dry-run", "--metrics-file", metricsFile)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	o := runCmd(t, cmd)
	if o.code != 0 {
		t.Fatalf("run --dry-run: %s", o)
	}
	for _, want := range []string{
		"dry run against " + pebble.DirectoryURL + " itself (the CA has no staging directory",
		"dry run: live: output.fullchain not written (a run writes " + filepath.Join(out, "live.fullchain.pem") + ")",
		"dry run: live: output.key not written (a run writes " + filepath.Join(out, "live.key.pem") + ")",
		"dry run: fresh: output.cert not written (a run writes " + filepath.Join(out, "fresh.cert.pem") + ")",
		"dry run: nothing was saved",
	} {
		if !strings.Contains(o.stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, o)
		}
	}
	if l := resultLine(o, "live"); !strings.Contains(l, " renewed ") || !strings.Contains(l, "dry run, ordered due or not; a run now: nothing: renew at ") {
		t.Errorf("live: %q, want renewed (a dry run orders whether due or not), and what a run would do now", l)
	}
	if _, err := os.Stat(metricsFile); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the metrics file was written by a dry run (%v)", err)
	}
	if l := resultLine(o, "fresh"); !strings.Contains(l, " issued ") || !strings.Contains(l, "a run now: issue now: no certificate yet") {
		t.Errorf("fresh: %q, want issued", l)
	}
	counts, _ := pebble.Counter().Snapshot()
	if counts["POST /sign-me-up"] != 1 || counts["POST /order-plz"] != 2 {
		t.Errorf("Pebble served %v, want 1 newAccount (the throwaway account) and 2 newOrders", counts)
	}
	renew := s.event("live.renew")
	if renew["dry_run"] != true || renew["previous_serial"] != live.SerialNumber.Text(16) || renew["serial"] == live.SerialNumber.Text(16) {
		t.Errorf("live's renew event = dry_run %v, previous_serial %v, serial %v; want a dry run's renewal of %s", renew["dry_run"], renew["previous_serial"], renew["serial"], live.SerialNumber.Text(16))
	}
	if issued := s.event("fresh.issued"); issued["dry_run"] != true {
		t.Errorf("fresh's issued event dry_run = %v, want true", issued["dry_run"])
	}
	if prov := s.event("fresh.challenge-provision.fresh.dry.example.com"); prov["dry_run"] != true {
		t.Errorf("challenge-provision dry_run = %v, want true", prov["dry_run"])
	}
	for _, name := range []string{"run.run-begin", "run.run-end"} {
		if ev := s.event(name); ev["dry_run"] != true {
			t.Errorf("%s dry_run = %v, want true", name, ev["dry_run"])
		}
	}
	if after := treeHash(t, storage); after != before {
		t.Errorf("the storage changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if after := treeHash(t, out); after != outBefore {
		t.Errorf("the output directory changed:\nbefore:\n%s\nafter:\n%s", outBefore, after)
	}
	left, _ := filepath.Glob(filepath.Join(tmp, "acmehook-dry-run-*"))
	if len(left) != 0 {
		t.Errorf("temporary storage left behind: %v", left)
	}

	t.Run("staging_directory", func(t *testing.T) {
		// The configured directory cannot be reached: only the staging
		// one is used.
		text := strings.Replace(baseConfig(s.work.Unserved), fmt.Sprintf("directory = %q", pebble.DirectoryURL), fmt.Sprintf("directory = \"https://127.0.0.1:1/directory\"\nstaging_directory = %q", pebble.DirectoryURL), 1) + certs
		if err := os.WriteFile(s.config, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		o := s.acmehook("issue", "fresh", "--dry-run")
		if o.code != 0 || !strings.Contains(o.stdout, "dry run against the staging directory "+pebble.DirectoryURL+", with a throwaway account and storage") || !strings.Contains(resultLine(o, "fresh"), " issued ") {
			t.Errorf("issue fresh --dry-run: %s", o)
		}
		if after := treeHash(t, storage); after != before {
			t.Errorf("the storage changed")
		}
	})
	t.Run("failure", func(t *testing.T) {
		s.write(certs + "\n[[certificate]]\nname = \"broken\"\ndomains = [\"broken.dry.example.com\"]\nsolver = \"unserved\"\nself_check = false\n")
		o := s.acmehook("issue", "--dry-run", "broken")
		if o.code != 1 || !strings.Contains(resultLine(o, "broken"), " failed ") || !strings.Contains(o.stdout, "dry run: nothing was saved") {
			t.Errorf("issue --dry-run of a failing certificate: %s; want exit 1, failed, nothing saved", o)
		}
		if after := treeHash(t, storage); after != before {
			t.Errorf("the storage changed")
		}
	})
}

// runCmd runs cmd (from site.command, with a changed environment) and
// returns its outcome.
func runCmd(t *testing.T, cmd *exec.Cmd) outcome {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("running %s: %v", cmd, err)
	}
	return outcome{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String()}
}

// TestE2EDryRunEtcd: on an etcd storage a dry run writes nothing to etcd
// (its revision, which every write raises, is unchanged), registers no
// node and takes no lock, and still dry-runs the stored certificate as a
// renewal.
func TestE2EDryRunEtcd(t *testing.T) {
	s := newSite(t)
	c := testetcd.Start(t, testetcd.Options{})
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	conf := fleetSite(t, s, c, id, "n1", "[[certificate]]\nname = \"etcd\"\ndomains = [\"etcd.dry.example.com\"]\nsolver = \"webroot\"\nscripts = [\"events.lua\"]\n")
	if o := s.acmehookWith(conf, "run"); o.code != 0 {
		t.Fatalf("run on etcd: %s", o)
	}
	cli := c.Client(t)
	revision := func() int64 {
		t.Helper()
		resp, err := cli.Get(t.Context(), "/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	// The run's lease may still be revoked after it exits; wait until
	// etcd is quiet before taking the reference revision.
	before := revision()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		time.Sleep(300 * time.Millisecond)
		if r := revision(); r == before {
			break
		} else {
			before = r
		}
	}
	o := s.acmehookWith(conf, "run", "--dry-run")
	if o.code != 0 || !strings.Contains(resultLine(o, "etcd"), " renewed ") || !strings.Contains(o.stdout, "dry run: nothing was saved") {
		t.Fatalf("run --dry-run on etcd: %s", o)
	}
	if s.event("etcd.renew")["dry_run"] != true {
		t.Errorf("the renew event was not marked dry_run")
	}
	if after := revision(); after != before {
		t.Errorf("etcd revision went from %d to %d: the dry run wrote to etcd", before, after)
	}
}
