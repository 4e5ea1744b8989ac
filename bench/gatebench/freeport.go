package main

import (
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
)

// Ports are looked for in [minPort, the start of the ephemeral range).
const minPort = 10000

// ephemeralRangeFile holds the kernel's range of ports for outgoing
// connections.
const ephemeralRangeFile = "/proc/sys/net/ipv4/ip_local_port_range"

// freeportCmd prints n distinct loopback TCP ports that were free a moment
// ago, one a line, for proxies whose configuration needs a port number
// rather than port 0.
func freeportCmd(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("freeport", flag.ContinueOnError)
	n := fs.Int("n", 1, "how many ports")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("freeport: %w", err)
	}
	ports, err := freePorts(*n)
	if err != nil {
		return err
	}
	for _, p := range ports {
		fmt.Fprintln(out, p)
	}
	return nil
}

// freePorts finds n ports on 127.0.0.1 that accept a listener, all held
// open together so that they differ. They lie below the ephemeral range: the
// connection-rate load cycles through every ephemeral port, and a port handed
// out by the kernel for port 0 could be in use by one of its connections by
// the time a proxy binds it.
func freePorts(n int) ([]int, error) {
	end := ephemeralStart()
	span := end - minPort
	if n <= 0 || span < n {
		return nil, fmt.Errorf("freeport: cannot find %d ports in [%d, %d)", n, minPort, end)
	}
	var ports []int
	first := rand.IntN(span)
	for i := 0; i < span && len(ports) < n; i++ {
		p := minPort + (first+i)%span
		ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p})
		if err != nil {
			continue
		}
		defer ln.Close()
		ports = append(ports, p)
	}
	if len(ports) < n {
		return nil, fmt.Errorf("freeport: only %d of %d ports free in [%d, %d)", len(ports), n, minPort, end)
	}
	return ports, nil
}

// ephemeralStart returns the first port of the kernel's ephemeral range, or
// Linux's default when the range cannot be read.
func ephemeralStart() int {
	lo, hi := 32768, 60999
	if b, err := os.ReadFile(ephemeralRangeFile); err == nil {
		fmt.Sscan(string(b), &lo, &hi)
	}
	return lo
}
