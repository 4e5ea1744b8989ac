package https_test

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"

	"github.com/gatehouse-proxy/gatehouse/protocols/https"
	"github.com/gatehouse-proxy/gatehouse/protocols/https/exchangetest"
	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// A frontend in front of one Exchange-like back-end, with cookie affinity
// for OWA. Requests are classified by their path's first segment.
func Example() {
	backend := exchangetest.NewServer("cas-a")
	defer backend.Close()

	quiet := slog.New(slog.DiscardHandler)
	pool := &proxy.Pool{Name: "exchange", Backends: []*proxy.Backend{proxy.NewBackend("cas-a", backend.Addr, 1)}}
	front := &https.Frontend{Pool: pool, Config: https.Config{
		Services: map[string]https.Service{https.OWA: {Affinity: https.AffinityCookie}},
	}, Link: proxy.Link{Log: quiet},
	}
	srv := &proxy.Server{Name: "exchange", Handler: front, Log: quiet}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }()
	defer func() { srv.Close(); <-done }()

	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, path := range []string{"/EWS/healthcheck.htm", "/"} {
		resp, err := client.Get("http://" + ln.Addr().String() + path)
		if err != nil {
			fmt.Println(err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(path, https.Classify(path), resp.StatusCode, resp.Header.Get("Location"), string(body))
	}
	// Output:
	// /EWS/healthcheck.htm ews 200  200 OK<br/>cas-a
	// / default 302 /owa/
}
