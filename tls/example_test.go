package tls_test

import (
	"bufio"
	"context"
	stdtls "crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"

	"github.com/gatehouse-proxy/gatehouse/tls"
)

// A development certificate set: a local CA kept in storage, and a
// listener config under gatehouse's TLS policy.
func ExampleNewManager() {
	storage, _ := os.MkdirTemp("", "gatehouse-example")
	defer os.RemoveAll(storage)
	certs := tls.Certificates{Source: tls.SourceSelfSigned, Names: []string{"mail.example.test"}, Storage: storage}
	m, err := tls.NewManager(context.Background(), certs, slog.New(slog.DiscardHandler))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()
	imaps := m.ServerConfig()                 // a mail listener: no ALPN
	https := m.ServerConfig("h2", "http/1.1") // an HTTPS listener
	fmt.Println(stdtls.VersionName(imaps.MinVersion), https.NextProtos)
	// Output: TLS 1.2 [h2 http/1.1]
}

// A frontend's STARTTLS: send the go-ahead, then upgrade the raw
// connection; what the client pipelined behind STARTTLS is dropped.
func ExampleServerStartTLS() {
	storage, _ := os.MkdirTemp("", "gatehouse-example")
	defer os.RemoveAll(storage)
	m, err := tls.NewManager(context.Background(), tls.Certificates{Storage: storage}, slog.New(slog.DiscardHandler))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()

	server, client := net.Pipe()
	go func() { // a client that injects NOOP behind STARTTLS
		r := bufio.NewReader(client)
		io.WriteString(client, "STARTTLS\r\nNOOP\r\n")
		r.ReadString('\n') // 220 Ready to start TLS
		tc := stdtls.Client(client, &stdtls.Config{InsecureSkipVerify: true})
		io.WriteString(tc, "QUIT\r\n")
	}()

	r := bufio.NewReader(server)
	r.ReadString('\n') // STARTTLS
	io.WriteString(server, "220 2.0.0 Ready to start TLS\r\n")
	tc, discarded, err := tls.ServerStartTLS(server, r, m.ServerConfig())
	if err != nil {
		fmt.Println(err)
		return
	}
	next, _ := bufio.NewReader(tc).ReadString('\n') // a new reader: nothing from before TLS
	fmt.Printf("discarded %d bytes; first command inside TLS: %q\n", discarded, next)
	// Output: discarded 6 bytes; first command inside TLS: "QUIT\r\n"
}
