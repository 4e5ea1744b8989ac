//go:build linux

package proxy

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
)

// mapRouter routes users by a file of "user backend" and "@domain backend"
// lines. The file is checked for changes at most once per cfg.Reload, on
// the next lookup; a changed file replaces the table for new logins only,
// so sessions in progress stay where they are. A file that no longer
// parses leaves the previous table in force.
type mapRouter struct {
	cfg  RouteConfig
	pool *Pool
	log  *slog.Logger

	mu      sync.Mutex
	table   *mapTable
	checked time.Time // last stat
	stamp   fileStamp // of the file the table came from
}

// mapTable is one parsed map file. Keys are case-folded.
type mapTable struct {
	users   map[string]*Backend // "alice" or "alice@example.com"
	domains map[string]*Backend // "@example.com"
}

// fileStamp tells whether a file changed since it was read.
type fileStamp struct {
	mod  time.Time
	size int64
}

func newMapRouter(cfg RouteConfig, pool *Pool, log *slog.Logger) (*mapRouter, error) {
	m := &mapRouter{cfg: cfg, pool: pool, log: log}
	st, err := stampOf(cfg.File)
	if err != nil {
		return nil, err
	}
	t, err := readMapFile(cfg.File, pool)
	if err != nil {
		return nil, err
	}
	m.table, m.stamp, m.checked = t, st, time.Now()
	return m, nil
}

// Route implements Router: the mapped back-end alone, or
// ErrRouteUnavailable when it cannot take a session now.
func (m *mapRouter) Route(_ context.Context, q RouteQuery) (RouteResult, error) {
	b := m.current().lookup(q.User)
	var res RouteResult
	var err error
	switch {
	case b != nil:
		res, err = m.mapped(b)
	case m.cfg.Unmapped == "reject":
		res, err = RouteResult{Source: RouteMap}, &DeniedError{Message: "no route for this user"}
	default:
		res, err = hashRoute(m.pool, q.User)
	}
	countRoute(m.pool.Name, res.Source, err)
	return res, err
}

func (m *mapRouter) mapped(b *Backend) (RouteResult, error) {
	res := RouteResult{Source: RouteMap}
	if !b.Usable() {
		return res, fmt.Errorf("%w: mapped back-end %s is down or disabled", ErrRouteUnavailable, b.Name)
	}
	res.Order = []*Backend{b}
	return res, nil
}

// current returns the table in force, first reloading the file if it is
// time to look and it changed.
func (m *mapRouter) current() *mapTable {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	if now.Sub(m.checked) < m.cfg.Reload {
		return m.table
	}
	m.checked = now
	st, err := stampOf(m.cfg.File)
	if err != nil {
		m.log.Error("map file unreadable, keeping the previous table", "listener", m.pool.Name, "err", err)
		return m.table
	}
	if st == m.stamp {
		return m.table
	}
	m.reload(st)
	return m.table
}

func (m *mapRouter) reload(st fileStamp) {
	t, err := readMapFile(m.cfg.File, m.pool)
	if err != nil {
		mapReloads.WithLabelValues(m.pool.Name, "failed").Inc()
		m.log.Error("map file rejected, keeping the previous table", "listener", m.pool.Name, "err", err)
		return
	}
	m.table, m.stamp = t, st
	mapReloads.WithLabelValues(m.pool.Name, "ok").Inc()
	m.log.Info("map file reloaded", "listener", m.pool.Name, "file", m.cfg.File,
		"users", len(t.users), "domains", len(t.domains))
}

// lookup finds the user's back-end: the exact name first, then the
// domain of an address. It returns nil for an unmapped user.
func (t *mapTable) lookup(user string) *Backend {
	u := foldUser(user)
	if b := t.users[u]; b != nil {
		return b
	}
	if i := strings.LastIndexByte(u, '@'); i >= 0 {
		return t.domains[u[i:]]
	}
	return nil
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, fmt.Errorf("map file: %w", err)
	}
	return fileStamp{mod: fi.ModTime(), size: fi.Size()}, nil
}

// readMapFile parses a map file, naming the line of the first error.
func readMapFile(path string, pool *Pool) (*mapTable, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("map file: %w", err)
	}
	defer f.Close()
	t := &mapTable{users: make(map[string]*Backend), domains: make(map[string]*Backend)}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		if err := t.addLine(sc.Text(), pool); err != nil {
			return nil, fmt.Errorf("map file %s line %d: %w", path, n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("map file %s: %w", path, err)
	}
	return t, nil
}

// addLine adds one "key backend" line; blank lines and comments add nothing.
func (t *mapTable) addLine(line string, pool *Pool) error {
	if i := strings.IndexByte(line, '#'); i >= 0 {
		line = line[:i]
	}
	f := strings.Fields(line)
	switch {
	case len(f) == 0:
		return nil
	case len(f) != 2:
		return fmt.Errorf("want \"user backend\" or \"@domain backend\", got %q", line)
	}
	b := backendNamed(pool, f[1])
	if b == nil {
		return fmt.Errorf("back-end %q is not in listener %s", f[1], pool.Name)
	}
	key, dst := foldUser(f[0]), t.users
	if strings.HasPrefix(key, "@") {
		dst = t.domains
	}
	if key == "@" {
		return fmt.Errorf("empty domain")
	}
	if _, dup := dst[key]; dup {
		return fmt.Errorf("%s is mapped twice", f[0])
	}
	dst[key] = b
	return nil
}

func backendNamed(pool *Pool, name string) *Backend {
	for _, b := range pool.Backends {
		if b.Name == name {
			return b
		}
	}
	return nil
}

// foldUser case-folds a login name: mail systems treat Alice and alice as
// one mailbox, and so must routing.
func foldUser(u string) string { return strings.ToLower(u) }
