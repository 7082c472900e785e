package standalone

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/acmehook/acmehook/plugin/sdk"
)

func TestNewAndTypes(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		cfg  map[string]any
		want string
	}{
		{map[string]any{"http_listen": []any{}, "tls_listen": []any{}}, "nothing to serve"},
		{map[string]any{"http_listn": []any{":80"}}, `unknown field "http_listn"`},
		{map[string]any{"http_listen": ":80"}, "cannot unmarshal string"},
	} {
		if _, err := New(ctx, sdk.Config{Values: tt.cfg}); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("New(%v) = %v, want %q", tt.cfg, err, tt.want)
		}
	}

	s, err := New(ctx, sdk.Config{Values: map[string]any{"http_listen": []any{"127.0.0.1:0"}, "tls_listen": []any{}}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := sdk.Challenge{Identifier: sdk.Identifier{Type: "dns", Value: "example.com"}, Token: "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"}
	for typ, want := range map[string]string{"tls-alpn-01": "tls-alpn-01 is off", "dns-01": `challenge type "dns-01" not supported`} {
		c.Type = typ
		if _, err := s.Present(ctx, &sdk.PresentRequest{Challenge: c}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Present(%s) = %v, want %q", typ, err, want)
		}
	}
}

// TestInfoOffersServedTypes: Info lists only the challenge types the
// configured servers answer (Offers), so the host never picks one that is
// off; before the configuration, the description's.
func TestInfoOffersServedTypes(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		cfg  map[string]any // nil: not configured
		want []string
	}{
		{"not configured", nil, []string{"http-01", "tls-alpn-01"}},
		{"both", map[string]any{"http_listen": []any{"127.0.0.1:0"}, "tls_listen": []any{"127.0.0.1:0"}}, []string{"http-01", "tls-alpn-01"}},
		{"http only", map[string]any{"http_listen": []any{"127.0.0.1:0"}, "tls_listen": []any{}}, []string{"http-01"}},
		{"tls-alpn only", map[string]any{"http_listen": []any{}, "tls_listen": []any{"127.0.0.1:0"}}, []string{"tls-alpn-01"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := Plugin.ChallengeTypes
			if tt.cfg != nil {
				s, err := New(ctx, sdk.Config{Values: tt.cfg})
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				got = s.Offers()
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("challenge types = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestPortTaken: a port already in use is one error that says what was
// being started once (acme/standalone names it; New adds nothing).
func TestPortTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for key, other := range map[string]string{"http_listen": "tls_listen", "tls_listen": "http_listen"} {
		_, err := New(context.Background(), sdk.Config{Values: map[string]any{key: []any{ln.Addr().String()}, other: []any{}}})
		what := map[string]string{"http_listen": "starting http-01 server", "tls_listen": "starting tls-alpn-01 server"}[key]
		if err == nil || !strings.HasPrefix(err.Error(), what+": ") || strings.Count(err.Error(), what) != 1 || !strings.Contains(err.Error(), "address already in use") {
			t.Errorf("New(%s taken) = %v, want %q once, then the bind error", key, err, what)
		}
	}
}
