package https

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// impacketClient opens an RPC over HTTP v2 virtual connection through
// rpcproxy with impacket's client: NTLM on each channel, Expect:
// 100-continue, CONN/A1 and CONN/B1, then it waits for CONN/A3 and CONN/C2
// on the OUT channel.
const impacketClient = `
import sys
from impacket.dcerpc.v5 import transport
t = transport.DCERPCTransportFactory('ncacn_http:%s[6001]' % sys.argv[2])
t.set_rpc_proxy_url(sys.argv[1])
t.set_credentials('alice', 'demo', 'EXAMPLE')
t.connect()
print('virtual connection up')
t.disconnect()
`

// needImpacket fails the test when Debian's python3-impacket is missing.
func needImpacket(t *testing.T) {
	t.Helper()
	if err := exec.Command("/usr/bin/python3", "-c", "import impacket.dcerpc.v5.rpch").Run(); err != nil {
		t.Fatal("impacket is missing: install the Debian package python3-impacket")
	}
}

func TestIntegrationImpacketRPCOverHTTPThroughGatehouse(t *testing.T) {
	needImpacket(t)
	servers, pool := exchangeFarm(t, 3)
	f := &Frontend{Pool: pool, Config: Config{Services: map[string]Service{RPC: {Affinity: AffinityRPCChannel}}}}
	addr := tlsFrontend(t, f)
	together := testutil.ToFloat64(rpcPairs.WithLabelValues("exchange", "together"))
	for i := range 3 {
		out, err := exec.Command("/usr/bin/python3", "-c", impacketClient,
			"https://"+addr+"/rpc/rpcproxy.dll", fmt.Sprintf("mbx%d@example.com", i)).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "virtual connection up") {
			t.Fatalf("impacket through gatehouse: %v\n%s", err, out)
		}
	}
	// Both channels of each virtual connection reached one back-end, as
	// alice, and gatehouse counted the pairs from the cookies it saw.
	vcs := channelsOf(servers)
	if len(vcs) != 3 {
		t.Fatalf("back-ends saw %d virtual connections, want 3", len(vcs))
	}
	for vc, kinds := range vcs {
		if len(kinds[true]) != 1 || len(kinds[false]) != 1 || kinds[true][0] != kinds[false][0] {
			t.Errorf("cookie %x: IN on %v, OUT on %v", vc[:4], kinds[true], kinds[false])
		}
	}
	for _, s := range servers {
		for _, ch := range s.Channels() {
			if ch.User != "alice" {
				t.Errorf("%s channel on %s authenticated as %q", ch.PDU, s.Name, ch.User)
			}
		}
	}
	eventually(t, wait, "pairs counted", func() bool {
		return testutil.ToFloat64(rpcPairs.WithLabelValues("exchange", "together"))-together == 3
	})
}
