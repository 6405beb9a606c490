package client

import (
	"context"

	"github.com/bai-sh/bai/pkg/events"
)

// Health asks the gateway's health report (admin only): every service
// instance, agent and stream with its state.
func (c *Client) Health(ctx context.Context) (*events.HealthResponse, error) {
	var resp events.HealthResponse
	return &resp, c.request(ctx, events.OpAdminHealth, struct{}{}, &resp)
}
