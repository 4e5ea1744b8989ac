package upgrade

import (
	"os"
	"testing"
)

// A process started afresh inherits nothing and has nobody to tell it
// serves: a non-nil ready made `gatehouse run` log "serving on the sockets
// of the replaced gatehouse" and send systemd a MAINPID at every start.
func TestInheritedInAFreshProcess(t *testing.T) {
	if _, ok := os.LookupEnv(envSockets); ok {
		t.Fatalf("%s is set in the test's environment", envSockets)
	}
	sockets, ready, err := Inherited()
	if err != nil || sockets != nil || ready != nil {
		t.Errorf("Inherited() = %v, ready set: %v, %v; want nothing", sockets, ready != nil, err)
	}
}
