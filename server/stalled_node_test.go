package server

import (
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/svcflags"
)

// stallProxy forwards TCP to a NATS server until stall: then it keeps
// every connection open and forwards nothing more, as a node does that
// is stopped (SIGSTOP) or cut off behind a partition.
type stallProxy struct {
	l       net.Listener
	stalled chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   []net.Conn
}

func newStallProxy(t *testing.T, target string) *stallProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{l: l, stalled: make(chan struct{})}
	p.wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			p.wg.Go(func() { p.pipe(s, c) })
			p.wg.Go(func() { p.pipe(c, s) })
		}
	})
	t.Cleanup(func() {
		l.Close()
		p.stall()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

// pipe copies from src to dst until the proxy stalls; then it reads on
// (the peer's writes do not block) and drops what it reads.
func (p *stallProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		select {
		case <-p.stalled:
			continue
		default:
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			_, _ = io.Copy(io.Discard, src)
			return
		}
	}
}

func (p *stallProxy) stall() { p.once.Do(func() { close(p.stalled) }) }

func (p *stallProxy) url() string { return "nats://" + p.l.Addr().String() }

// TestStalledNodeIsLeft: a service's connection (svcflags.NATSOptions)
// whose server stops answering, its TCP connection still open, moves to
// another server of its list within seconds (two unanswered pings), where
// nats.go's default would wait minutes: an agent on a stopped or cut-off
// node is not silent past its timeout while the rest of the cluster
// serves.
func TestStalledNodeIsLeft(t *testing.T) {
	t.Parallel()
	a, b := natstest.RunServer(t), natstest.RunServer(t)
	proxy := newStallProxy(t, a.Addr().String())
	opts, err := (&svcflags.Common{}).NATSOptions("stall-test", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(proxy.url()+","+b.ClientURL(), append(opts, nats.DontRandomize())...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if got := nc.ConnectedUrl(); got != proxy.url() {
		t.Fatalf("connected to %s, want the proxy %s first", got, proxy.url())
	}
	proxy.stall()
	natstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if got := nc.ConnectedUrl(); got != b.ClientURL() {
			return fmt.Errorf("connected to %q (status %v), want %s", got, nc.Status(), b.ClientURL())
		}
		return nil
	})
	if err := nc.Publish("after.stall", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		t.Fatalf("flush on the other server: %v", err)
	}
}
