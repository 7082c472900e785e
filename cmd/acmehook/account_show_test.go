package main

import (
	"testing"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/engine"
	"github.com/acmehook/acmehook/engine/store"
)

// TestTOSAgreed: account show reports the agreement made locally when the
// CA does not echo termsOfServiceAgreed (issue 13: "tos agreed: false" was
// printed for an account created with agree_tos = true).
func TestTOSAgreed(t *testing.T) {
	tests := []struct {
		name          string
		local, remote bool
		want          string
	}{
		{"CA reports it", true, true, "yes (the CA reports it)"},
		{"CA reports it, not stored locally", false, true, "yes (the CA reports it)"},
		{"only agreed locally", true, false, "yes (agreed by acmehook when the account was created; the CA does not report it)"},
		{"never agreed", false, false, "no"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info := engine.AccountInfo{
				Stored: store.AccountInfo{TermsOfServiceAgreed: tt.local},
				Remote: acme.Account{TermsOfServiceAgreed: tt.remote},
			}
			if got := tosAgreed(info); got != tt.want {
				t.Errorf("tosAgreed(local %t, CA %t) = %q, want %q", tt.local, tt.remote, got, tt.want)
			}
		})
	}
}
