package main

import (
	"context"
	"fmt"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/bai-sh/bai/pkg/svcflags"
)

// pingsScenario measures what the services' keep-alive costs where nothing
// else happens: -agents idle connections over loopback TCP to one NATS
// server in this process, first with nats.go's default ping (every two
// minutes), then with the services' own (svcflags.PingInterval, two
// outstanding), each over -ping-window. The CPU is both ends' (the server
// and the clients share the process); a real agent pays its one ping a
// second on its own host, the server all of them.
func pingsScenario(ctx context.Context, o options) error {
	ns, stop, err := startNATS("pings", &natsserver.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
		MaxConn: o.agents + 16})
	if err != nil {
		return err
	}
	defer stop()
	fmt.Printf("pings: %d idle connections over loopback TCP, %v each way\n", o.agents, o.pingWindow)
	for _, p := range []struct {
		name string
		opts []nats.Option
	}{
		{"nats.go's default ping (2m)", nil},
		{fmt.Sprintf("the services' ping (%v, 2 outstanding)", svcflags.PingInterval),
			[]nats.Option{nats.PingInterval(svcflags.PingInterval), nats.MaxPingsOutstanding(2)}},
	} {
		rate, err := idleCPU(ctx, ns.ClientURL(), o.agents, o.pingWindow, p.opts)
		if err != nil {
			return err
		}
		fmt.Printf("%-45s %7.1f ms CPU a second (%.2f%% of one core), %.1f µs a connection a second\n",
			p.name, float64(rate.Microseconds())/1000, float64(rate)/float64(time.Second)*100,
			float64(rate.Nanoseconds())/1000/float64(max(o.agents, 1)))
	}
	return nil
}

// idleCPU opens n connections with opts, lets them settle, and returns the
// process's CPU a second over window.
func idleCPU(ctx context.Context, url string, n int, window time.Duration, opts []nats.Option) (time.Duration, error) {
	conns := make([]*nats.Conn, 0, n)
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	for range n {
		nc, err := nats.Connect(url, opts...)
		if err != nil {
			return 0, err
		}
		conns = append(conns, nc)
	}
	// Settle: the connects' own work is not the keep-alive's.
	if err := pause(ctx, window/5); err != nil {
		return 0, err
	}
	c0 := cpuTime()
	if err := pause(ctx, window); err != nil {
		return 0, err
	}
	return time.Duration(float64(cpuTime()-c0) / window.Seconds()), nil
}

// pause waits d: the idle time is what this scenario measures.
func pause(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
