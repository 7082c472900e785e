package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/acmehook/acmehook/engine"
)

// The documents printed by --json. Their field names are a stable
// interface, documented in docs/cli.md ("JSON output"): fields may be
// added, none is renamed or removed. Every field is always present; a
// time that does not apply is null, a string that does not apply is "".
// Times are RFC 3339 in UTC.

// ListOutput is what `acmehook list --json` prints.
type ListOutput struct {
	// Certificates in the order of the configuration.
	Certificates []CertificateStatus `json:"certificates"`
}

// CertificateStatus is one configured certificate and what the next run
// would do with it, as list shows it (engine.Status).
type CertificateStatus struct {
	Name    string   `json:"name"`
	Domains []string `json:"domains"`
	// Next is what a run would do: "issue" (no certificate yet), "renew",
	// "redeploy" (retry a failed deploy), "hold" (a new certificate is
	// needed but the failure backoff or the reissue guard holds the order
	// until At) or "none" (current, due at At). Reason says why.
	Next   string `json:"next"`
	Reason string `json:"reason"`
	// Due reports that the next run orders a new certificate (Next is
	// "issue" or "renew").
	Due bool `json:"due"`
	// At is when the certificate is due (Next "none") or when the hold
	// ends (Next "hold"); null when the run would act now.
	At *time.Time `json:"at"`
	// NextCheck is when acmehook daemon looks at the certificate again.
	NextCheck *time.Time `json:"next_check"`
	// Current is the stored current certificate, null when there is none.
	Current *CurrentCertificate `json:"current"`
	// DeployPending reports a deploy that failed and is retried by the
	// next run.
	DeployPending bool `json:"deploy_pending"`
	// LastEvent is the latest recorded event, null when there is none.
	LastEvent *EventRecord `json:"last_event"`
	// Error is why the certificate's stored state could not be read; then
	// only Name and Domains are meaningful. "" otherwise.
	Error string `json:"error"`
	// Deployed says, on an etcd storage (a fleet), which live nodes
	// deployed the current certificate; null on the file storage and
	// when there is no current certificate.
	Deployed *FleetDeploy `json:"deployed"`
}

// FleetDeploy is which live nodes of a fleet deployed the current
// certificate (each node deploys every version once, docs/fleet.md).
type FleetDeploy struct {
	// Nodes is how many nodes are live; Current how many of them
	// deployed the current version successfully.
	Nodes   int `json:"nodes"`
	Current int `json:"current"`
	// Lagging are the live nodes that did not (yet), with their last
	// deploy record of the certificate.
	Lagging []NodeDeploy `json:"lagging"`
}

// NodeDeploy is a node's last deploy record of a certificate.
type NodeDeploy struct {
	Node    string `json:"node"`
	Version string `json:"version"` // the version it deployed last, "" if none
	Serial  string `json:"serial"`
	// Result is "ok", "error" (Error says why) or "none" (no deploy yet).
	Result string     `json:"result"`
	Time   *time.Time `json:"time"`
	Error  string     `json:"error"`
}

// String is the DEPLOYED column of list: "3/3", or "2/3 (c: error: ...)".
func (d *FleetDeploy) String() string {
	if d == nil {
		return "-"
	}
	out := fmt.Sprintf("%d/%d", d.Current, d.Nodes)
	var why []string
	for _, n := range d.Lagging {
		switch {
		case n.Result == "none":
			why = append(why, n.Node+": not yet")
		case n.Result == "error":
			why = append(why, n.Node+": error: "+oneLine(n.Error))
		default:
			why = append(why, n.Node+": on serial "+n.Serial)
		}
	}
	if len(why) > 0 {
		out += " (" + strings.Join(why, "; ") + ")"
	}
	return out
}

// CurrentCertificate is the stored current certificate of a
// CertificateStatus.
type CurrentCertificate struct {
	Version   string    `json:"version"` // stored version ID
	Serial    string    `json:"serial"`  // lowercase hex
	Names     []string  `json:"names"`   // identifiers it was issued for
	Issuer    string    `json:"issuer"`  // issuer common name
	KeyType   string    `json:"key_type"`
	Profile   string    `json:"profile"` // the profile the CA applied; "" when it names none
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	// KeyMovedAside reports that its key was moved aside (revoked for
	// keyCompromise) and is never used again.
	KeyMovedAside bool `json:"key_moved_aside"`
}

// EventRecord is an event recorded in a certificate's metadata.
type EventRecord struct {
	Event  string    `json:"event"`  // issued, renew, failed, revoke, deploy ...
	Result string    `json:"result"` // "ok" or "error"
	Time   time.Time `json:"time"`
	Detail string    `json:"detail"` // the error, with the ACME problem, when Result is "error"
}

// ExplainOutput is what `acmehook explain NAME --json` prints: the status
// of list, and the renewal decision behind it.
type ExplainOutput struct {
	CertificateStatus
	Renewal RenewalDecision `json:"renewal"`
}

// RenewalDecision is the renewal policy's decision for the current
// certificate (ARI window, lifetime rule, revocation, backoff, guard),
// whatever else makes a run order (no certificate, changed names ...).
type RenewalDecision struct {
	// Due reports that the policy wants a new certificate now; At is when
	// it is (or became) due; Reason says what determined At.
	Due    bool       `json:"due"`
	At     *time.Time `json:"at"`
	Reason string     `json:"reason"`
	// NextCheck is when the policy should be asked again;
	// FetchRenewalInfo reports that the next run first asks the CA for
	// renewal information (ARI).
	NextCheck        *time.Time `json:"next_check"`
	FetchRenewalInfo bool       `json:"fetch_renewal_info"`
	// Facts are the labelled lines of the text output (certificate
	// validity, lifetime rule, ARI window, last error, backoff, reissue
	// guard ...), for people: labels and wording may change.
	Facts []Fact `json:"facts"`
}

// Fact is one labelled line of explain.
type Fact struct {
	Label string `json:"label"`
	Text  string `json:"text"`
}

// PluginsOutput is what `acmehook plugins --json` prints.
type PluginsOutput struct {
	// Plugins sorted by configured name.
	Plugins []PluginStatus `json:"plugins"`
}

// PluginStatus is one configured plugin as it reported itself.
type PluginStatus struct {
	Name string `json:"name"` // as configured ([plugins.NAME])
	Path string `json:"path"`
	// Reports, Version, ChallengeTypes, IdentifierTypes and
	// WaitsForPropagation are the plugin's Info; "", [] and false when it
	// failed to start.
	Reports             string   `json:"reports"`
	Version             string   `json:"version"`
	ChallengeTypes      []string `json:"challenge_types"`
	IdentifierTypes     []string `json:"identifier_types"`
	WaitsForPropagation bool     `json:"waits_for_propagation"`
	// Error is why the plugin did not start, "" when it did.
	Error string `json:"error"`
}

// writeJSON encodes v as one indented JSON document.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// certificateStatus is st as list --json prints it.
func certificateStatus(st engine.Status) CertificateStatus {
	s := CertificateStatus{Name: st.Name, Domains: st.Domains}
	if st.Err != nil {
		s.Error = st.Err.Error()
		return s
	}
	s.Next, s.Reason, s.Due = string(st.Next), st.Reason, st.Due()
	s.At, s.NextCheck = utcPtr(st.At), utcPtr(st.NextCheck)
	if cur := st.Current; cur != nil {
		s.Current = &CurrentCertificate{
			Version: cur.Version, Serial: cur.Serial, Names: cur.Names, Issuer: cur.Issuer,
			KeyType: cur.KeyType, Profile: cur.Profile, NotBefore: cur.NotBefore.UTC(), NotAfter: cur.NotAfter.UTC(),
			KeyMovedAside: cur.KeyMovedAside,
		}
	}
	s.DeployPending = st.PendingDeploy
	if ev := st.LastEvent; ev != nil {
		s.LastEvent = &EventRecord{Event: ev.Name, Result: ev.Result, Time: ev.Time.UTC(), Detail: ev.Detail}
	}
	return s
}

// explainOutput is st as explain --json prints it.
func explainOutput(st engine.Status) ExplainOutput {
	d := st.Decision
	out := ExplainOutput{CertificateStatus: certificateStatus(st), Renewal: RenewalDecision{
		Due: d.Due, At: utcPtr(d.At), Reason: d.Reason,
		NextCheck: utcPtr(d.NextCheck), FetchRenewalInfo: d.FetchARI,
		Facts: []Fact{},
	}}
	for _, f := range d.Facts() {
		out.Renewal.Facts = append(out.Renewal.Facts, Fact{Label: f.Label, Text: f.Text})
	}
	return out
}

func utcPtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

func fmtTimePtr(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return fmtTime(*t)
}

// newTable returns a tabwriter for w, buffered: a tabwriter writes each
// cell on its own, which for 10,000 certificates was 60,000 write(2)
// calls to the terminal or pipe. flush ends the table.
func newTable(w io.Writer) (tw *tabwriter.Writer, flush func() error) {
	bw := bufio.NewWriterSize(w, 64<<10)
	tw = tabwriter.NewWriter(bw, 0, 0, 2, ' ', 0)
	return tw, func() error { return errors.Join(tw.Flush(), bw.Flush()) }
}

// writeTable prints the listing as the table of `acmehook list`.
// On a fleet (fleet set) it has a DEPLOYED column last.
func (l *ListOutput) writeTable(w io.Writer, fleet bool) error {
	tw, flush := newTable(w)
	head := "NAME\tNAMES\tISSUER\tNOT AFTER\tNEXT RENEWAL\tLAST RESULT"
	if fleet {
		head += "\tDEPLOYED"
	}
	fmt.Fprintln(tw, head)
	for _, s := range l.Certificates {
		deployed := ""
		if fleet {
			deployed = "\t" + s.Deployed.String()
		}
		if s.Error != "" {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\terror: %s%s\n", s.Name, strings.Join(s.Domains, ","), oneLine(s.Error), deployed)
			continue
		}
		issuer, notAfter := "-", "-"
		if cur := s.Current; cur != nil {
			issuer, notAfter = orDash(cur.Issuer), fmtTime(cur.NotAfter)
		}
		last := "-"
		if ev := s.LastEvent; ev != nil {
			last = fmt.Sprintf("%s %s %s", ev.Event, ev.Result, ev.Time.Format("2006-01-02 15:04"))
			if s.DeployPending {
				last += " (deploy pending)"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s%s\n", s.Name, strings.Join(s.Domains, ","), issuer, notAfter, s.nextRenewal(), last, deployed)
	}
	return flush()
}

// nextRenewal is list's NEXT RENEWAL column: when a run orders next.
func (s *CertificateStatus) nextRenewal() string {
	switch {
	case s.Next == string(engine.NextIssue):
		return "now (no certificate)"
	case s.Due:
		return "now (" + s.Reason + ")"
	case s.Next == string(engine.NextHold):
		return fmtTimePtr(s.At) + " (held: " + s.Reason + ")"
	}
	return fmtTimePtr(s.At)
}

// writeTable prints the plugins as the table of `acmehook plugins`.
func (p *PluginsOutput) writeTable(w io.Writer) {
	tw, flush := newTable(w)
	fmt.Fprintln(tw, "PLUGIN\tREPORTS\tVERSION\tCHALLENGES\tIDENTIFIERS\tWAITS FOR PROPAGATION\tPATH")
	for _, s := range p.Plugins {
		if s.Error != "" {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t%s (error: %s)\n", s.Name, s.Path, oneLine(s.Error))
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%t\t%s\n", s.Name, s.Reports, s.Version, strings.Join(s.ChallengeTypes, ","), strings.Join(s.IdentifierTypes, ","), s.WaitsForPropagation, s.Path)
	}
	flush()
}
