package https

import (
	stdtls "crypto/tls"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// needCurl fails the test when curl is missing: CI installs it.
func needCurl(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl is missing: install the Debian package curl")
	}
}

// tlsFrontend serves f over TLS with a fresh self-signed certificate.
func tlsFrontend(t *testing.T, f *Frontend) string {
	t.Helper()
	f.TLSMode = proxy.TLSImplicit
	f.EdgeTLS = &stdtls.Config{Certificates: []stdtls.Certificate{selfSigned(t)}, NextProtos: []string{"h2", "http/1.1"}}
	return serve(t, f)
}

// curlLogins runs n curl --ntlm processes at once, alternating alice and
// bob, each fetching two URLs over one connection, and returns how many
// answers named the right user.
func curlLogins(t *testing.T, addr string, n int) (ok int, outputs []string) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := range n {
		user := []string{"alice", "bob"}[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			base := "https://" + addr
			out, _ := exec.Command("curl", "-sk", "--max-time", "20", "--ntlm", "-u", `EXAMPLE\`+user+":demo",
				base+"/EWS/Exchange.asmx", base+"/mapi/emsmdb/").CombinedOutput()
			good := strings.Count(string(out), "for "+user+"\n")
			mu.Lock()
			ok += good
			outputs = append(outputs, string(out))
			mu.Unlock()
		}()
	}
	wg.Wait()
	return ok, outputs
}

func TestIntegrationNTLMCurlThroughGatehouse(t *testing.T) {
	needCurl(t)
	_, pool := exchangeFarm(t, 2)
	addr := tlsFrontend(t, &Frontend{Pool: pool})
	// 50 curl clients at once, TLS terminated by gatehouse, two back-ends
	// whose NTLM challenge is valid only on the connection that issued it.
	ok, outs := curlLogins(t, addr, 50)
	if ok != 100 {
		t.Errorf("%d of 100 answers named their user; some outputs: %q", ok, outs[:min(3, len(outs))])
	}
}

func TestIntegrationNTLMCurlFailsWithoutPinning(t *testing.T) {
	needCurl(t)
	_, pool := exchangeFarm(t, 2)
	addr := roundRobinProxy(t, pool, true)
	ok, _ := curlLogins(t, addr, 50)
	if ok == 100 {
		t.Error("every curl login succeeded without pinning: the test above could not fail")
	}
	t.Log(fmt.Sprintf("without pinning %d of 100 answers named their user", ok))
}
