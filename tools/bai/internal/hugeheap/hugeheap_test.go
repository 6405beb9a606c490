//go:build linux && (amd64 || arm64)

package hugeheap

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestHeapStartsOnHugePage: the block the heap starts in is one huge page
// once init has run, wherever the kernel can do it.
func TestHeapStartsOnHugePage(t *testing.T) {
	if state.off {
		t.Skip("BAI_HUGEPAGE=0 in the environment")
	}
	if state.block == 0 {
		t.Fatal("init tried nothing")
	}
	if err := state.collapse; err != 0 {
		switch {
		case errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.ENOMEM):
			t.Skipf("no huge page free: %v", err)
		case errors.Is(err, syscall.EINVAL) && !collapseExpected(t):
			t.Skipf("this kernel cannot collapse (%v): transparent huge pages off, or Linux before 6.1", err)
		}
		t.Fatalf("MADV_COLLAPSE of %#x: %v", state.block, err)
	}
	kb, err := anonHugeKB(state.block)
	if err != nil {
		t.Fatal(err)
	}
	if kb < hugePage>>10 {
		t.Fatalf("the heap's mapping at %#x has %d kB of huge pages, want %d", state.block, kb, hugePage>>10)
	}
}

// TestOff: BAI_HUGEPAGE=0 leaves the heap alone.
func TestOff(t *testing.T) {
	if os.Getenv("HUGEHEAP_CHILD") != "" {
		if !state.off || state.block != 0 || probe != nil {
			fmt.Printf("state %+v with BAI_HUGEPAGE=0\n", state)
			os.Exit(1)
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestOff$")
	cmd.Env = append(os.Environ(), "HUGEHEAP_CHILD=1", "BAI_HUGEPAGE=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

// collapseExpected says whether this kernel should have collapsed: Linux
// 6.1 or later with transparent huge pages not "never".
func collapseExpected(t *testing.T) bool {
	b, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil || strings.Contains(string(b), "[never]") {
		return false
	}
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		t.Fatal(err)
	}
	var rel []byte
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		rel = append(rel, byte(c))
	}
	var major, minor int
	if _, err := fmt.Sscanf(string(rel), "%d.%d", &major, &minor); err != nil {
		t.Fatalf("kernel release %q: %v", rel, err)
	}
	return major > 6 || major == 6 && minor >= 1
}

// anonHugeKB is the AnonHugePages of the mapping holding addr, from
// /proc/self/smaps.
func anonHugeKB(addr uintptr) (int, error) {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	in := false
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if lo, hi, ok := strings.Cut(fields[0], "-"); ok && !strings.HasSuffix(fields[0], ":") {
			a, err1 := strconv.ParseUint(lo, 16, 64)
			b, err2 := strconv.ParseUint(hi, 16, 64)
			if err1 == nil && err2 == nil {
				in = uint64(addr) >= a && uint64(addr) < b
				continue
			}
		}
		if in && fields[0] == "AnonHugePages:" && len(fields) >= 2 {
			return strconv.Atoi(fields[1])
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no mapping holds %#x in /proc/self/smaps", addr)
}
