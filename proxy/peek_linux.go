package proxy

import (
	"golang.org/x/sys/unix"
)

// peek reports how many bytes wait in the socket's receive queue, or EOF,
// without taking any: EAGAIN means nothing yet.
func peek(fd int) (queued int, eof bool, err error) {
	var b [1]byte
	n, _, err := unix.Recvfrom(fd, b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
	switch {
	case err != nil:
		return 0, false, err
	case n == 0:
		return 0, true, nil
	}
	queued, err = unix.IoctlGetInt(fd, unix.SIOCINQ)
	if err != nil || queued < 1 {
		queued = 1
	}
	return queued, false, nil
}
