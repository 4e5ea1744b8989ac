package health

// verdict is the up/down state of one check. It starts up but unconfirmed,
// so a back-end that is dead at start goes down on its first failure; after
// that it takes fall consecutive failures to go down and rise consecutive
// passes to come back up, as HAProxy counts them.
type verdict struct {
	up        bool // the check's state; a new verdict should start up
	confirmed bool // a probe result has confirmed or changed the state
	passes    int  // consecutive passes so far
	fails     int  // consecutive failures so far
}

// observe records one probe result and reports whether up changed.
func (v *verdict) observe(ok bool, rise, fall int) (changed bool) {
	if ok {
		v.passes, v.fails = v.passes+1, 0
	} else {
		v.passes, v.fails = 0, v.fails+1
	}
	switch {
	case v.up && ok:
		v.confirmed = true
	case v.up && (!v.confirmed || v.fails >= fall):
		v.up, v.confirmed = false, true
		return true
	case !v.up && v.passes >= rise:
		v.up = true
		return true
	}
	return false
}

// restart forgets the current streak but keeps the state, for a check
// whose probe or settings were replaced.
func (v *verdict) restart() { v.passes, v.fails = 0, 0 }
