package client

import (
	"context"

	"github.com/bai-sh/bai/pkg/events"
)

// ListAgents lists every agent with its capacity, the scheduler's ledger
// of it, its heartbeat age and state (admin only).
func (c *Client) ListAgents(ctx context.Context) (*events.AgentListResponse, error) {
	var resp events.AgentListResponse
	return &resp, c.request(ctx, events.OpAgentList, struct{}{}, &resp)
}

// DrainAgent makes agent id take no new work; its sessions go on (admin
// only).
func (c *Client) DrainAgent(ctx context.Context, id string) (*events.AgentStatus, error) {
	var resp events.AgentStatus
	return &resp, c.request(ctx, events.OpAgentDrain, events.AgentRequest{ID: id}, &resp)
}

// UndrainAgent makes a drained agent take work again (admin only).
func (c *Client) UndrainAgent(ctx context.Context, id string) (*events.AgentStatus, error) {
	var resp events.AgentStatus
	return &resp, c.request(ctx, events.OpAgentUndrain, events.AgentRequest{ID: id}, &resp)
}

// AddImage registers the image name, with aliases, in the gateway's image
// table (admin only).
func (c *Client) AddImage(ctx context.Context, name string, aliases []string) (*events.ImageListResponse, error) {
	var resp events.ImageListResponse
	return &resp, c.request(ctx, events.OpImageAdd, events.ImageAddRequest{Name: name, Aliases: aliases}, &resp)
}
