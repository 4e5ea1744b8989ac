//go:build linux

package proxy

// CheckMapFile reads a map file as NewRouter would for a listener whose
// pool holds the back-ends named, and returns why NewRouter would refuse
// it: the file is missing or unreadable, a line is malformed, or a line
// names a back-end not in the pool. It changes nothing.
func CheckMapFile(path, listener string, backends []string) error {
	pool := &Pool{Name: listener}
	for _, name := range backends {
		pool.Backends = append(pool.Backends, &Backend{Name: name})
	}
	_, err := readMapFile(path, pool)
	return err
}
