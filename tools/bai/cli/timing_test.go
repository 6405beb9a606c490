package cli

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestTiming(t *testing.T) {
	now := time.Now()
	for _, v := range []string{"", "1", fmt.Sprint(now.Add(-time.Second).UnixNano())} {
		tm, err := newTiming(v, now)
		if err != nil || (v == "") != (tm == nil) {
			t.Fatalf("%q: %v %v", v, tm, err)
		}
	}
	for _, v := range []string{"yes", "0", "-1", "1.5", fmt.Sprint(now.Add(time.Minute).UnixNano()), fmt.Sprint(now.Add(-2 * time.Hour).UnixNano())} {
		var ee *exitError
		if _, err := newTiming(v, now); !errors.As(err, &ee) || ee.code != ExitUsage || !strings.Contains(err.Error(), EnvTiming) {
			t.Errorf("%q: %v, want a usage error naming %s", v, err, EnvTiming)
		}
	}
	tm, _ := newTiming(fmt.Sprint(now.Add(-1500*time.Microsecond).UnixNano()), now)
	tm.mark("main")
	tm.mark("connected")
	tm.mark("main") // the first counts
	var b strings.Builder
	tm.print(&b)
	var main, conn float64
	if _, err := fmt.Sscanf(b.String(), "bai-timing: main=%g connected=%g\n", &main, &conn); err != nil || main < 1.5 || conn < main {
		t.Fatalf("line %q: %v", b.String(), err)
	}
	var none *timing
	none.mark("main")
	none.print(&b) // nothing, no panic
}
