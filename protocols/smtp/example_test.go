package smtp_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/gatehouse-proxy/gatehouse/protocols/smtp"
	"github.com/gatehouse-proxy/gatehouse/protocols/smtp/smtptest"
	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// A relay listener in front of one back-end: the client's 250 is the
// back-end's own.
func ExampleFrontend() {
	mx := smtptest.NewServer("mx1")
	defer mx.Close()

	fe := &smtp.Frontend{
		Pool: &proxy.Pool{Name: "mx", Backends: []*proxy.Backend{proxy.NewBackend("mx1", mx.Addr, 1)}},

		Config: smtp.Config{Hostname: "gate.example"}, Link: proxy.Link{Log: slog.New(slog.DiscardHandler)},
	}
	srv := &proxy.Server{Name: "mx", Handler: fe, Log: slog.New(slog.DiscardHandler)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	go srv.Serve(ln)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()

	c, err := gosmtp.Dial(ln.Addr().String())
	if err != nil {
		fmt.Println(err)
		return
	}
	c.CommandTimeout, c.SubmissionTimeout = 5*time.Second, 5*time.Second
	err = c.SendMail("alice@example.org", []string{"bob@example.net"}, strings.NewReader("Subject: hi\r\n\r\nHello.\r\n"))
	fmt.Println(err, c.Quit())
	fmt.Println(mx.Messages()[0].From, mx.Messages()[0].To)
	// Output:
	// <nil> <nil>
	// alice@example.org [bob@example.net]
}
