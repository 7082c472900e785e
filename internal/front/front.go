// Package front is a small TCP load balancer on loopback, the "front" of a
// test or demo fleet: it accepts connections on one address (Pebble's
// http-01 or tls-alpn-01 validation port) and forwards each to one of
// several backends (each node's solver), round-robin or at random, and
// counts the connections each backend received. A backend that refuses
// connections is passed over for the next one.
package front

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Front is a running load balancer.
type Front struct {
	// Addr is the address it listens on.
	Addr string

	ln       net.Listener
	backends []string
	random   bool
	next     atomic.Uint64
	counts   []atomic.Int64
	failed   atomic.Int64
	wg       sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// Start listens on addr ("127.0.0.1:0" for any port) and forwards each
// connection to a backend: round-robin, or at random with random set.
func Start(addr string, backends []string, random bool) (*Front, error) {
	if len(backends) == 0 {
		return nil, fmt.Errorf("front: no backends")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("front: %w", err)
	}
	f := &Front{Addr: ln.Addr().String(), ln: ln, backends: backends, random: random,
		counts: make([]atomic.Int64, len(backends)), conns: map[net.Conn]struct{}{}}
	f.wg.Add(1)
	go f.serve()
	return f, nil
}

// Counts returns how many connections each backend (in Start's order)
// received.
func (f *Front) Counts() []int64 {
	out := make([]int64, len(f.counts))
	for i := range f.counts {
		out[i] = f.counts[i].Load()
	}
	return out
}

// Failed returns how many connections reached no backend.
func (f *Front) Failed() int64 { return f.failed.Load() }

// Close stops listening and closes every forwarded connection.
func (f *Front) Close() {
	f.ln.Close()
	f.mu.Lock()
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

func (f *Front) serve() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		i := int(f.next.Add(1)-1) % len(f.backends)
		if f.random {
			i = rand.IntN(len(f.backends))
		}
		f.wg.Add(1)
		go f.forward(c, i)
	}
}

func (f *Front) track(c net.Conn, on bool) {
	f.mu.Lock()
	if on {
		f.conns[c] = struct{}{}
	} else {
		delete(f.conns, c)
	}
	f.mu.Unlock()
}

func (f *Front) forward(c net.Conn, i int) {
	defer f.wg.Done()
	f.track(c, true)
	defer f.track(c, false)
	defer c.Close()
	// A backend that refuses the connection (its node is down) is
	// passed over for the next, as a load balancer's health check would.
	var b net.Conn
	for try := range len(f.backends) {
		j := (i + try) % len(f.backends)
		var err error
		if b, err = net.DialTimeout("tcp", f.backends[j], 5*time.Second); err == nil {
			f.counts[j].Add(1)
			break
		}
	}
	if b == nil {
		f.failed.Add(1)
		return
	}
	f.track(b, true)
	defer f.track(b, false)
	defer b.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(b, c)
	go pipe(c, b)
	<-done
	<-done
}
