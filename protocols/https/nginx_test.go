package https

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
)

// nginx is a real Debian nginx back-end in a directory of its own: one
// process (no master, no daemon), listening on a loopback port, logging
// every request it parsed as one JSON line. It reads each request body
// in full before answering (it proxies to a second server of its own on
// a unix socket), so a request's end is where nginx's parser found it.
type nginx struct {
	addr string
	dir  string
	cmd  *exec.Cmd
	done chan error
}

// nginxEntry is one request as nginx logged it.
type nginxEntry struct {
	Request   string `json:"request"`
	Status    string `json:"status"`
	XFF       string `json:"xff"`
	RealIP    string `json:"real_ip"`
	CL        string `json:"cl"`
	TE        string `json:"te"`
	Upgrade   string `json:"upgrade"`
	Length    string `json:"length"`
	Conn      string `json:"conn"`
	ConnCount string `json:"n"`
}

const nginxConf = `daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 256; }
http {
    log_format probe escape=json '{"request":"$request","status":"$status",'
        '"xff":"$http_x_forwarded_for","real_ip":"$http_x_real_ip",'
        '"cl":"$content_length","te":"$http_transfer_encoding","upgrade":"$http_upgrade",'
        '"length":"$request_length","conn":"$connection","n":"$connection_requests"}';
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    keepalive_requests 1000;
    server {
        listen 127.0.0.1:%[2]d;
        access_log %[1]s/access.log probe;
        location / {
            proxy_pass http://unix:%[1]s/inner.sock:;
        }
    }
    server {
        listen unix:%[1]s/inner.sock;
        access_log off;
        location / { return 200 "ok\n"; }
    }
}
`

// startNginx starts nginx on a free loopback port (retrying when another
// process takes the port first) and stops it when the test ends.
func startNginx(t testing.TB) *nginx {
	t.Helper()
	bin := wiretest.NeedTool(t, "nginx", "nginx")
	var last string
	for attempt := 0; attempt < 5; attempt++ {
		n, out, ok := tryNginx(t, bin)
		if ok {
			return n
		}
		last = out
	}
	t.Fatalf("nginx did not start: %s", last)
	return nil
}

func tryNginx(t testing.TB, bin string) (*nginx, string, bool) {
	dir, err := os.MkdirTemp("", "gatehouse-nginx-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	port := freePort(t)
	conf := filepath.Join(dir, "nginx.conf")
	wiretest.WriteFile(t, conf, fmt.Sprintf(nginxConf, dir, port))
	n := &nginx{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), dir: dir, done: make(chan error, 1)}
	n.cmd = exec.Command(bin, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", conf)
	out := &wiretest.Logs{}
	n.cmd.Stdout, n.cmd.Stderr = out, out
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("starting nginx: %v", err)
	}
	go func() { n.done <- n.cmd.Wait() }()
	up := wiretest.Eventually(wait, func() bool {
		select {
		case err := <-n.done:
			n.done <- err
			return true
		default:
		}
		c, err := net.DialTimeout("tcp", n.addr, time.Second)
		if err == nil {
			c.Close()
			return true
		}
		return false
	})
	select {
	case <-n.done:
		errLog, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		return nil, out.String() + string(errLog), false
	default:
	}
	if !up {
		n.stop()
		return nil, "no answer on " + n.addr, false
	}
	t.Cleanup(n.stop)
	return n, "", true
}

func (n *nginx) stop() {
	n.cmd.Process.Signal(os.Interrupt)
	select {
	case <-n.done:
	case <-time.After(wait):
		n.cmd.Process.Kill()
		<-n.done
	}
}

// freePort returns a loopback port nobody listened on a moment ago.
func freePort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// entries returns every request nginx has logged so far.
func (n *nginx) entries(t testing.TB) []nginxEntry {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.dir, "access.log"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []nginxEntry
	for line := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
		if line == "" {
			continue
		}
		var e nginxEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("nginx log line %q: %v", line, err)
		}
		out = append(out, e)
	}
	return out
}

// settle sends a marker request straight to nginx and waits until nginx
// has logged it: nginx is one process serving its connections in the
// order their bytes came, so every request of a connection that gatehouse
// closed before is logged by then. It returns the entries before the
// marker, from index from on, and the index to start from next time.
func (n *nginx) settle(t testing.TB, from int, marker string) ([]nginxEntry, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", n.addr)
	if err != nil {
		t.Fatalf("marker request: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(wait))
	fmt.Fprintf(c, "GET /%s HTTP/1.1\r\nHost: marker\r\nConnection: close\r\n\r\n", marker)
	if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
		t.Fatalf("marker request: %v", err)
	}
	var all []nginxEntry
	eventually(t, wait, "nginx to log "+marker, func() bool {
		all = n.entries(t)
		for _, e := range all[min(from, len(all)):] {
			if strings.Contains(e.Request, marker) {
				return true
			}
		}
		return false
	})
	var out []nginxEntry
	for _, e := range all[min(from, len(all)):] {
		if !strings.Contains(e.Request, "/marker-") {
			out = append(out, e)
		}
	}
	return out, len(all)
}

// quiet waits until nginx's log has not grown for half a second (at most
// wait) and returns every entry but the markers.
func (n *nginx) quiet(t testing.TB) []nginxEntry {
	t.Helper()
	var all []nginxEntry
	last, since := -1, time.Now()
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		all = n.entries(t)
		if len(all) != last {
			last, since = len(all), time.Now()
			continue
		}
		if time.Since(since) >= 500*time.Millisecond {
			break
		}
	}
	var out []nginxEntry
	for _, e := range all {
		if !strings.Contains(e.Request, "/marker-") {
			out = append(out, e)
		}
	}
	return out
}
