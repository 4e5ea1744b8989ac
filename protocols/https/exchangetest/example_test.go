package exchangetest_test

import (
	"fmt"
	"io"
	"time"

	"github.com/gatehouse-proxy/gatehouse/protocols/https/exchangetest"
)

func Example() {
	s := exchangetest.NewTLSServer("cas-a")
	defer s.Close()
	s.SetDown("EWS", true)

	c := s.Client() // trusts the server's self-signed certificate
	c.Timeout = 5 * time.Second
	for _, path := range []string{"/owa/healthcheck.htm", "/EWS/healthcheck.htm"} {
		resp, err := c.Get(s.URL + path)
		if err != nil {
			fmt.Println(err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(path, resp.StatusCode, resp.Header.Get("X-Backend"), string(body))
	}
	// Output:
	// /owa/healthcheck.htm 200 cas-a 200 OK<br/>cas-a
	// /EWS/healthcheck.htm 503 cas-a 503 Service Unavailable
}
