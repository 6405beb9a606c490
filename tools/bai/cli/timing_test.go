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
	steps, err := ParseTiming("warning: something\n" + b.String())
	if err != nil || len(steps) != 2 || steps[0].Name != "main" || steps[1].Name != "connected" || steps[0].MS < 1.5 || steps[1].MS < steps[0].MS {
		t.Fatalf("line %q: %+v %v", b.String(), steps, err)
	}
	for _, bad := range []string{"", "bai: failed\n", b.String() + b.String(), "bai-timing: main\n", "bai-timing: main=x\n", "bai-timing: =1\n"} {
		if _, err := ParseTiming(bad); err == nil {
			t.Errorf("ParseTiming(%q): no error", bad)
		}
	}
	var none *timing
	none.mark("main")
	none.print(&b) // nothing, no panic
}
