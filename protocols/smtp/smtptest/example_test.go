package smtptest_test

import (
	"fmt"
	"strings"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/gatehouse-proxy/gatehouse/protocols/smtp/smtptest"
)

func Example() {
	s := smtptest.NewServer("mx-a")
	defer s.Close()

	c, err := gosmtp.Dial(s.Addr)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	c.CommandTimeout, c.SubmissionTimeout = 5*time.Second, 5*time.Second
	err = c.SendMail("alice@example.org", []string{"bob@example.net"},
		strings.NewReader("Subject: hi\r\n\r\nHello.\r\n"))
	if err != nil {
		fmt.Println(err)
		return
	}

	m := s.Messages()[0]
	fmt.Println(m.From, m.To, s.Sessions())
	// Output: alice@example.org [bob@example.net] 1
}

func ExampleServer_failures() {
	s := smtptest.NewUnstartedServer("mx-b")
	s.DataReply = &gosmtp.SMTPError{Code: 452, EnhancedCode: gosmtp.EnhancedCode{4, 3, 1}, Message: "Mailbox full"}
	s.Start()
	defer s.Close()

	c, err := gosmtp.Dial(s.Addr)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	c.CommandTimeout, c.SubmissionTimeout = 5*time.Second, 5*time.Second
	err = c.SendMail("alice@example.org", []string{"bob@example.net"}, strings.NewReader("Hello.\r\n"))
	fmt.Println(err, len(s.Messages()))
	// Output: SMTP error 452: Mailbox full 0
}
