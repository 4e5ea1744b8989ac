package imaptest_test

import (
	"fmt"
	"net"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/gatehouse-proxy/gatehouse/protocols/imap/imaptest"
)

func Example() {
	s := imaptest.NewUnstartedServer("imap-a")
	s.AddUser("alice", "secret", []byte("Subject: hi\r\n\r\nHello.\r\n"))
	s.Start()
	defer s.Close()

	conn, err := net.DialTimeout("tcp", s.Addr, 5*time.Second)
	if err != nil {
		fmt.Println(err)
		return
	}
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	c := imapclient.New(conn, nil)
	defer c.Close()
	if err := c.Login("alice", "secret").Wait(); err != nil {
		fmt.Println(err)
		return
	}
	inbox, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(inbox.NumMessages, s.Logins())
	// Output: 1 [alice]
}
