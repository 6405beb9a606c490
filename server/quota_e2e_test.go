package server

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/tools/bai/client"
)

// createMany makes n creates of req from 16 creators at once and returns
// how many were admitted and the refusals.
func createMany(t *testing.T, cl *client.Client, n int, req events.CreateRequest) (int, []error) {
	t.Helper()
	var (
		mu       sync.Mutex
		ok       int
		refusals []error
		wg       sync.WaitGroup
		next     = make(chan struct{}, n)
	)
	for range n {
		next <- struct{}{}
	}
	close(next)
	for range 16 {
		wg.Go(func() {
			for range next {
				_, err := cl.Create(context.Background(), req)
				mu.Lock()
				if err == nil {
					ok++
				} else {
					refusals = append(refusals, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return ok, refusals
}

// TestQuotasPastAPage (issue 13, point 1): resource policies hold exactly
// past a list page (1,000 sessions) and with 16 creators at once: a
// pending limit of 1,001 admits exactly 1,001 of 1,300 creates, a cpu=11
// total slots limit exactly 1,100 sessions of cpu=0.01 of 1,150. The
// sessions ask more memory than the agent has, so they stay pending.
func TestQuotasPastAPage(t *testing.T) {
	if testing.Short() {
		t.Skip("2,450 creates")
	}
	r := startServerWith(t, Config{AgentCapacity: map[string]string{"cpu": "1", "mem": "64m"},
		// Sessions that fit no agent must wait here, not be refused.
		AgentMemory: -1})
	admin := r.client(t)
	ctx := context.Background()
	for _, p := range []events.PolicyInfo{
		{Name: "pending-1001", MaxPendingSessions: 1001},
		{Name: "cpu-11", TotalSlots: map[string]string{"cpu": "11"}},
	} {
		if _, err := admin.AddPolicy(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		policy   string
		creates  int
		slots    []string
		admitted int
		refusal  string
	}{
		{"pending-1001", 1300, []string{"cpu=0.01", "mem=128m"}, 1001, "You cannot have more than 1001 pending sessions"},
		{"cpu-11", 1150, []string{"cpu=0.01", "mem=128m"}, 1100,
			`Your resource request exceeds the total resource slots of your policy "cpu-11": cpu 11 in use + 0.01 requested > 11`},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			cl := r.clientAs(t, r.newTenant(t, "user", tc.policy))
			ok, refusals := createMany(t, cl, tc.creates, events.CreateRequest{Image: "python", Slots: tc.slots})
			if ok != tc.admitted || len(refusals) != tc.creates-tc.admitted {
				t.Fatalf("%d admitted, %d refused (want %d and %d): %v", ok, len(refusals), tc.admitted, tc.creates-tc.admitted, refusals[:min(len(refusals), 5)])
			}
			for _, err := range refusals {
				if !errors.Is(err, events.ErrQuota) || !strings.Contains(err.Error(), tc.refusal) {
					t.Fatalf("refusal: %v, want %q", err, tc.refusal)
				}
			}
			list, err := cl.List(ctx, events.ListRequest{Statuses: events.AllStatuses, Limit: 1})
			if err != nil || list.Total != tc.admitted {
				t.Fatalf("sessions: %v, %d in the registry (want %d)", err, list.Total, tc.admitted)
			}
			// Ending one frees exactly one place.
			if _, err := cl.Terminate(ctx, list.Sessions[0].ID); err != nil {
				t.Fatal(err)
			}
			natstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
				_, err := cl.Create(ctx, events.CreateRequest{Image: "python", Slots: tc.slots})
				return err
			})
			if _, err := cl.Create(ctx, events.CreateRequest{Image: "python", Slots: tc.slots}); !errors.Is(err, events.ErrQuota) {
				t.Fatalf("a second create after one ended: %v", err)
			}
		})
	}
}
