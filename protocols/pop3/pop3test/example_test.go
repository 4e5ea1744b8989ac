package pop3test_test

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/gatehouse-proxy/gatehouse/protocols/pop3/pop3test"
)

func Example() {
	s := pop3test.NewUnstartedServer("pop-a")
	s.Mailboxes = map[string]*pop3test.Mailbox{
		"alice": {Password: "secret", Messages: [][]byte{[]byte("Subject: hi\r\n\r\nHello.\r\n")}},
	}
	s.Start()
	defer s.Close()

	c, err := net.DialTimeout("tcp", s.Addr, 5*time.Second)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	fmt.Fprint(c, "USER alice\r\nPASS secret\r\nSTAT\r\nQUIT\r\n")
	for range 5 { // greeting and four replies
		line, _ := r.ReadString('\n')
		fmt.Println(strings.TrimSpace(line))
	}
	fmt.Println(s.Logins())
	// Output:
	// +OK pop-a POP3 ready
	// +OK send PASS
	// +OK pop-a: alice has 1 messages (23 octets)
	// +OK 1 23
	// +OK pop-a POP3 server signing off (1 messages left)
	// [alice]
}
