package imap

import "testing"

// A back-end's NO with a code that is not about the credentials (RFC 5530)
// is a temporary refusal: not throttled, not counted as a wrong password.
func TestRefusalCodes(t *testing.T) {
	for _, tt := range []struct {
		text      string
		temporary bool
		reply     string
	}{
		{" [UNAVAILABLE] try later", true, "a NO [UNAVAILABLE] try later"},
		{" [INUSE] mailbox locked", true, "a NO [INUSE] mailbox locked"},
		{" [AUTHENTICATIONFAILED] bad", false, "a NO [AUTHENTICATIONFAILED] bad"},
		{" Login failed", false, "a NO [AUTHENTICATIONFAILED] Login failed"},
		{"", false, "a NO [AUTHENTICATIONFAILED] Authentication failed."},
	} {
		e := refused("mail1", "a", tt.text)
		if e.Temporary != tt.temporary || e.Reply != tt.reply {
			t.Errorf("refused(%q) = temporary %v, reply %q; want %v, %q", tt.text, e.Temporary, e.Reply, tt.temporary, tt.reply)
		}
	}
}
