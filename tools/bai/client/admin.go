package client

import (
	"context"

	"github.com/bai-sh/bai/pkg/events"
)

// AddKeypair creates a keypair (admin only); the answer holds its secret,
// shown this once.
func (c *Client) AddKeypair(ctx context.Context, req events.KeypairAddRequest) (*events.KeypairInfo, error) {
	var resp events.KeypairInfo
	return &resp, c.request(ctx, events.OpKeypairAdd, req, &resp)
}

// ListKeypairs lists every keypair (admin only).
func (c *Client) ListKeypairs(ctx context.Context) (*events.KeypairListResponse, error) {
	var resp events.KeypairListResponse
	return &resp, c.request(ctx, events.OpKeypairList, struct{}{}, &resp)
}

// KeypairInfo shows one keypair (admin only).
func (c *Client) KeypairInfo(ctx context.Context, ak string) (*events.KeypairInfo, error) {
	var resp events.KeypairInfo
	return &resp, c.request(ctx, events.OpKeypairInfo, events.KeypairRequest{AccessKey: ak}, &resp)
}

// RemoveKeypair revokes a keypair (admin only); its live connections are
// closed.
func (c *Client) RemoveKeypair(ctx context.Context, ak string) (*events.KeypairInfo, error) {
	var resp events.KeypairInfo
	return &resp, c.request(ctx, events.OpKeypairRemove, events.KeypairRequest{AccessKey: ak}, &resp)
}

// RotateKeypair gives a keypair a new secret (admin only).
func (c *Client) RotateKeypair(ctx context.Context, ak string) (*events.KeypairInfo, error) {
	var resp events.KeypairInfo
	return &resp, c.request(ctx, events.OpKeypairRotate, events.KeypairRequest{AccessKey: ak}, &resp)
}

// AddPolicy creates a resource policy (admin only).
func (c *Client) AddPolicy(ctx context.Context, p events.PolicyInfo) (*events.PolicyInfo, error) {
	var resp events.PolicyInfo
	return &resp, c.request(ctx, events.OpPolicyAdd, p, &resp)
}

// SetPolicy replaces an existing resource policy (admin only).
func (c *Client) SetPolicy(ctx context.Context, p events.PolicyInfo) (*events.PolicyInfo, error) {
	var resp events.PolicyInfo
	return &resp, c.request(ctx, events.OpPolicySet, p, &resp)
}

// ListPolicies lists the resource policies (admin only).
func (c *Client) ListPolicies(ctx context.Context) (*events.PolicyListResponse, error) {
	var resp events.PolicyListResponse
	return &resp, c.request(ctx, events.OpPolicyList, struct{}{}, &resp)
}
