package health

import (
	"errors"
	"syscall"
)

// LocalError reports whether err is gatehouse's own failure rather than
// the back-end's: out of descriptors (EMFILE, ENFILE), buffers (ENOBUFS,
// ENOMEM) or local ports (EADDRNOTAVAIL). A probe that fails so has
// learnt nothing about the back-end: the Monitor logs it, counts it as
// result "unknown" and keeps the check's state, so a flood that exhausts
// gatehouse never marks its back-ends down.
func LocalError(err error) bool {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.EADDRNOTAVAIL} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}
