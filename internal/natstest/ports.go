package natstest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"testing"
)

// FreePorts are n distinct loopback ports that are free now, for servers
// whose ports must be known before they start (a cluster's routes, a
// generated config).
//
// They are taken below the kernel's ephemeral range where there is room,
// so that no socket bound to port 0 in the meantime (this test's other
// servers, another test binary, a client's local end) can take one before
// the server that was meant to have it. A port from ":0", closed and
// reused later, can be.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	lo, hi := 10000, ephemeralLow()
	seen := map[int]bool{}
	var out []int
	for tries := 0; len(out) < n; tries++ {
		if tries > 1000 {
			t.Fatalf("no %d free loopback ports in [%d, %d) after %d tries", n, lo, hi, tries)
		}
		port := 0
		if hi-lo >= 1000 {
			port = lo + rand.IntN(hi-lo)
			if seen[port] {
				continue
			}
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue // in use
		}
		port = l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !seen[port] {
			seen[port] = true
			out = append(out, port)
		}
	}
	return out
}

// ephemeralLow is the low end of the kernel's ephemeral port range
// (32768 when it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	var lo, hi int
	if _, err := fmt.Sscan(string(b), &lo, &hi); err != nil || lo <= 0 {
		return 32768
	}
	return lo
}
