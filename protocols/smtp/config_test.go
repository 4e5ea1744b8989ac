package smtp

import (
	"strings"
	"testing"
	"time"
)

// The zero Config takes every documented default.
func TestConfigDefaults(t *testing.T) {
	var c Config
	c.SetDefaults()
	if c.Mode != ModeRelay || c.Auth != AuthNone || c.Hostname == "" || c.MaxRecipients != 1000 ||
		c.MaxLineLength != 2000 || c.MaxErrors != 20 || c.CommandTimeout != 5*time.Minute ||
		c.DataTimeout != 3*time.Minute || c.BackendSetupTimeout != 30*time.Second ||
		c.BackendGreetingTimeout != 5*time.Second || c.HelloTimeout != time.Minute ||
		c.BackendCommandTimeout != 5*time.Minute || c.BackendDataTimeout != 9*time.Minute {
		t.Errorf("defaults: %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("the defaults do not validate: %v", err)
	}
	c = Config{Hostname: "mx.example", MaxRecipients: 5}
	c.SetDefaults()
	if c.Hostname != "mx.example" || c.MaxRecipients != 5 {
		t.Errorf("SetDefaults overwrote set fields: %+v", c)
	}
}

// Validate names the key at fault.
func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		c   Config
		key string
	}{
		{Config{Mode: "proxy"}, "mode"},
		{Config{Auth: "ldap"}, "auth"},
		{Config{RequireAuth: true}, "require_auth"},
		{Config{Mode: ModePassthrough, Auth: AuthRelay}, "auth"},
		{Config{Mode: ModePassthrough, ReceivedHeader: true}, "received_header"},
		{Config{Mode: ModePassthrough, RequireAuth: true}, "require_auth"},
		{Config{Mode: ModePassthrough, XClient: true}, "xclient"},
		{Config{SourceAddress: "relay.example"}, "source_address"},
		{Config{BackendGreetingTimeout: -time.Second}, "backend_greeting_timeout"},
		{Config{HelloTimeout: -time.Second}, "hello_timeout"},
		{Config{Hostname: "mx example"}, "hostname"},
		{Config{MaxLineLength: 100}, "max_line_length"},
		{Config{MaxMessageBytes: -1}, "max_message_bytes"},
		{Config{DataTimeout: -time.Second}, "data_timeout"},
	} {
		err := tc.c.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), tc.key) {
			t.Errorf("Validate(%+v) = %v, want an error about %s", tc.c, err, tc.key)
		}
	}
	ok := Config{Mode: ModeRelay, Auth: AuthRelay, RequireAuth: true, XClient: true, ReceivedHeader: true,
		SourceAddress: "192.0.2.25"}
	if err := ok.Validate(); err != nil {
		t.Errorf("Validate(%+v) = %v", ok, err)
	}
}
