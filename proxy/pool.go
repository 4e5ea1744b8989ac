//go:build linux

package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// backendDialer leaves TCP keep-alive off, as HAProxy and nginx do: the
// idle timeout ends dead sessions, and each keep-alive option would cost a
// system call on every connection.
var backendDialer = &net.Dialer{KeepAlive: -1}

// ErrNoBackend is returned by Pool.Dial when no back-end could be reached.
var ErrNoBackend = errors.New("no back-end available")

// Pool is the set of back-ends one listener (or one HTTP service) balances
// over, with its ordering policy and dial settings. Configure the fields
// before the first Dial; the back-ends' live state changes concurrently.
type Pool struct {
	// Name labels the pool in logs and metrics (the listener's name).
	Name string
	// Backends are the candidates, in config order.
	Backends []*Backend
	// Policy orders usable back-ends for a key; nil means weighted
	// round-robin for an empty key and rendezvous hashing otherwise.
	Policy Policy
	// ConnectTimeout bounds each dial; 0 means 3 seconds.
	ConnectTimeout time.Duration
	// PassiveFailures is how many consecutive failed dials take a back-end
	// out until its health check sees it answer again; 0 means 3, negative
	// disables passive health.
	PassiveFailures int
	// OnPassiveDown, if set, is called once when dial failures take a
	// back-end out, so the health monitor can confirm it before it returns.
	OnPassiveDown func(*Backend)
	// Dialer dials back-ends; nil means a net.Dialer.
	Dialer func(ctx context.Context, network, addr string) (net.Conn, error)

	defaultPolicy sync.Once
	failures      atomic.Uint64 // sessions that found no back-end
}

// Failures returns how many sessions found no back-end able to take them.
func (p *Pool) Failures() uint64 { return p.failures.Load() }

// Usable returns the back-ends that may take a new session, in config order.
func (p *Pool) Usable() []*Backend {
	out := make([]*Backend, 0, len(p.Backends))
	for _, b := range p.Backends {
		if b.Usable() {
			out = append(out, b)
		}
	}
	return out
}

// Pick returns the usable back-ends for key, best first.
func (p *Pool) Pick(key string) []*Backend {
	usable := p.Usable()
	if len(usable) == 0 {
		return nil
	}
	return p.policy().Order(key, usable)
}

func (p *Pool) policy() Policy {
	p.defaultPolicy.Do(func() {
		if p.Policy == nil {
			p.Policy = &Rendezvous{Fallback: &WeightedRoundRobin{}}
		}
	})
	return p.Policy
}

// Dial connects to the first back-end for key that answers, trying the
// others in order on failure without pausing: failover costs one connect
// timeout at most. It returns ErrNoBackend, wrapped with the last error,
// when none answered.
func (p *Pool) Dial(ctx context.Context, key string) (net.Conn, *Backend, error) {
	return p.DialOrder(ctx, p.Pick(key))
}

// DialOrder is Dial over an order the caller already chose (for example a
// routing table's mapped back-end alone).
func (p *Pool) DialOrder(ctx context.Context, order []*Backend) (net.Conn, *Backend, error) {
	conn, b, err := p.dialInOrder(ctx, order)
	if err != nil {
		p.failures.Add(1)
		noBackend.WithLabelValues(p.Name).Inc()
	}
	return conn, b, err
}

func (p *Pool) dialInOrder(ctx context.Context, order []*Backend) (net.Conn, *Backend, error) {
	var last error = errors.New("none is usable")
	for i, b := range order {
		conn, err := p.dialOne(ctx, b)
		if err == nil {
			if i > 0 {
				failovers.WithLabelValues(p.Name, b.Name).Inc()
			}
			return conn, b, nil
		}
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, nil, fmt.Errorf("%w: %w", ErrNoBackend, last)
}

// dialOne dials one back-end with the connect timeout and keeps its passive
// health count.
func (p *Pool) dialOne(ctx context.Context, b *Backend) (net.Conn, error) {
	timeout := p.ConnectTimeout
	if timeout <= 0 {
		timeout = 3 * time.Second
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	dial := p.Dialer
	if dial == nil {
		dial = backendDialer.DialContext
	}
	conn, err := dial(dctx, "tcp", b.Addr)
	if err != nil && localError(err) {
		// gatehouse's own shortage says nothing about the back-end
		return nil, fmt.Errorf("dial %s (%s): %w", b.Name, b.Addr, err)
	}
	if err != nil {
		dialFailures.WithLabelValues(p.Name, b.Name).Inc()
		limit := p.PassiveFailures
		if limit == 0 {
			limit = 3
		}
		if b.dialFailed(limit) && p.OnPassiveDown != nil {
			p.OnPassiveDown(b)
		}
		return nil, fmt.Errorf("dial %s (%s): %w", b.Name, b.Addr, err)
	}
	b.dialSucceeded()
	return conn, nil
}
