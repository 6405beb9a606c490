// Package client is bai's API client: it connects to the NATS server with a
// keypair, sends the request/reply operations of package events
// (session.create, terminate, list, get, history) and follows a session's
// events and output live with core NATS subscriptions (a tenant has no
// JetStream API access).
//
// The bai CLI is built on it, and the all-in-one server's end-to-end tests
// import it directly. It imports no server, storage or runtime code.
package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/bai-sh/bai/pkg/events"
)

// Errors of this package. API failures are *events.APIError values, which
// match the events.Err* sentinels with errors.Is.
var (
	// ErrUnreachable: no connection to the NATS server could be made.
	ErrUnreachable = errors.New("cannot reach the bai server")
	// ErrAuth: the server refused the access key or secret key.
	ErrAuth = errors.New("the bai server refused the credentials")
	// ErrNotRunning: nothing answers the request's subject (the service
	// is down or starting, or a NATS node is down).
	ErrNotRunning = errors.New("not answering")
	// ErrTimeout: no reply, or no awaited event, in time.
	ErrTimeout = errors.New("timed out")
	// ErrClosed: the connection to the server is closed.
	ErrClosed = errors.New("connection to the bai server closed")
	// ErrBadReply: a reply or message could not be decoded.
	ErrBadReply = errors.New("bad reply")
)

// DefaultURL is the NATS server a client uses when none is given.
const DefaultURL = "nats://127.0.0.1:4222"

// Options configure a Client.
type Options struct {
	// URL of the NATS server. Default DefaultURL.
	URL string
	// AccessKey and SecretKey authenticate the connection (NATS user and
	// password). Required.
	AccessKey string
	SecretKey string
	// Timeout bounds each request whose context has no deadline. Default 10s.
	Timeout time.Duration
	// ConnectTimeout bounds the connection attempt. Default 2s.
	ConnectTimeout time.Duration
	// NATSOptions are appended to the client's own connect options (for
	// example nats.InProcessServer in tests). Default none.
	NATSOptions []nats.Option
}

// Client is a connection to bai on behalf of one access key. It is safe
// for concurrent use.
type Client struct {
	nc      *nats.Conn
	ak      string
	url     string // redacted, for messages
	timeout time.Duration
	closed  chan struct{}
	// watchers maps each watch subscription to its *Watcher.
	watchers sync.Map
}

// ctxDialer makes the connection attempt honour Connect's context.
type ctxDialer struct {
	ctx     context.Context
	timeout time.Duration
}

func (d ctxDialer) Dial(network, address string) (net.Conn, error) {
	nd := net.Dialer{Timeout: d.timeout}
	return nd.DialContext(d.ctx, network, address)
}

// Connect opens a connection as opts.AccessKey. An unreachable server gives
// an error wrapping ErrUnreachable that names the URL; refused credentials
// one wrapping ErrAuth.
func Connect(ctx context.Context, opts Options) (*Client, error) {
	if opts.URL == "" {
		opts.URL = DefaultURL
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 2 * time.Second
	}
	if !events.ValidToken(opts.AccessKey) {
		return nil, fmt.Errorf("%w: access key %q is not valid", ErrAuth, opts.AccessKey)
	}
	if opts.SecretKey == "" {
		return nil, fmt.Errorf("%w: no secret key for access key %s", ErrAuth, opts.AccessKey)
	}
	c := &Client{
		ak:      opts.AccessKey,
		url:     redact(opts.URL),
		timeout: opts.Timeout,
		closed:  make(chan struct{}),
	}
	nopts := []nats.Option{
		nats.Name("bai"),
		nats.UserInfo(opts.AccessKey, opts.SecretKey),
		nats.CustomInboxPrefix(events.InboxPrefix(opts.AccessKey)),
		nats.Timeout(opts.ConnectTimeout),
		nats.SetCustomDialer(ctxDialer{ctx: ctx, timeout: opts.ConnectTimeout}),
		nats.MaxReconnects(5),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.ClosedHandler(func(*nats.Conn) { close(c.closed) }),
		// A refused subscription fails its watcher; other asynchronous
		// errors show up as failed requests.
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if sub == nil {
				return
			}
			if w, ok := c.watchers.Load(sub); ok {
				w.(*Watcher).subErr(fmt.Errorf("subscribe to %s: %w", sub.Subject, err))
			}
		}),
	}
	nc, err := nats.Connect(opts.URL, append(nopts, opts.NATSOptions...)...)
	if err != nil {
		switch {
		case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired),
			errors.Is(err, nats.ErrAuthRevoked):
			return nil, fmt.Errorf("%w of access key %s at %s: %w", ErrAuth, opts.AccessKey, c.url, err)
		case ctx.Err() != nil:
			return nil, fmt.Errorf("connect to the bai server at %s: %w", c.url, ctx.Err())
		}
		return nil, fmt.Errorf("%w at %s: %w", ErrUnreachable, c.url, err)
	}
	c.nc = nc
	return c, nil
}

func redact(u string) string {
	p, err := url.Parse(u)
	if err != nil || p.User == nil {
		return u
	}
	return p.Redacted()
}

// Close closes the connection. Watchers stop.
func (c *Client) Close() { c.nc.Close() }

// AccessKey is the access key the client acts as.
func (c *Client) AccessKey() string { return c.ak }

// URL is the server's URL, with any password redacted.
func (c *Client) URL() string { return c.url }

// Conn is the underlying connection.
func (c *Client) Conn() *nats.Conn { return c.nc }

// serviceOf names the service that answers an operation, for messages.
func serviceOf(op string) string {
	switch op {
	case events.OpSessionCreate, events.OpSessionTerminate, events.OpSessionExecute, events.OpSessionUpload,
		events.OpSessionDownload, events.OpSessionFiles,
		events.OpImageList, events.OpImageAlias, events.OpImageAdd, events.OpAgentList, events.OpAgentDrain, events.OpAgentUndrain:
		return "gateway"
	case events.OpKeypairAdd, events.OpKeypairList, events.OpKeypairInfo, events.OpKeypairRemove, events.OpKeypairRotate, events.OpPolicyAdd, events.OpPolicyList, events.OpPolicySet:
		return "gateway"
	}
	return "registry"
}

// request sends one API request and decodes its reply into resp.
func (c *Client) request(ctx context.Context, op string, req, resp any) error {
	subj, err := events.APISubject(c.ak, op)
	if err != nil {
		return err
	}
	data, err := events.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode %s request: %w", op, err)
	}
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	msg, err := c.nc.RequestWithContext(ctx, subj, data)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		svc := serviceOf(op)
		return fmt.Errorf("the bai %s is %w (no %s serves %s): bai may still be starting, or every %s or a NATS node is down; retry in a moment",
			svc, ErrNotRunning, svc, subj, svc)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return fmt.Errorf("%s: %w waiting for the bai %s: %w", op, ErrTimeout, serviceOf(op), context.DeadlineExceeded)
	case errors.Is(err, nats.ErrConnectionClosed):
		return fmt.Errorf("%s: %w", op, ErrClosed)
	case err != nil:
		return fmt.Errorf("%s: %w", op, err)
	}
	if apiErr := events.ErrorFromHeader(map[string][]string(msg.Header)); apiErr != nil {
		return apiErr // its description already says what went wrong
	}
	if err := events.Unmarshal(msg.Data, resp); err != nil {
		return fmt.Errorf("%s: %w: %v", op, ErrBadReply, err)
	}
	return nil
}

// bounded gives ctx the client's timeout unless it has a deadline.
func (c *Client) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.timeout)
}

// Create asks for a new session.
func (c *Client) Create(ctx context.Context, req events.CreateRequest) (*events.CreateResponse, error) {
	var resp events.CreateResponse
	if err := c.request(ctx, events.OpSessionCreate, req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// Terminate asks to end a session by id: a pending one is cancelled, a live
// one terminated.
func (c *Client) Terminate(ctx context.Context, sessionID string) (*events.TerminateResponse, error) {
	return c.TerminateFor(ctx, "", sessionID)
}

// TerminateFor is Terminate on a session of access key ak (admins only;
// empty: the caller's own).
func (c *Client) TerminateFor(ctx context.Context, ak, sessionID string) (*events.TerminateResponse, error) {
	var resp events.TerminateResponse
	if err := c.request(ctx, events.OpSessionTerminate, events.TerminateRequest{SessionID: sessionID, AccessKey: ak}, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// List lists sessions, most recently changed first.
func (c *Client) List(ctx context.Context, req events.ListRequest) (*events.ListResponse, error) {
	var resp events.ListResponse
	if err := c.request(ctx, events.OpSessionList, req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// Get finds one session by id or name.
func (c *Client) Get(ctx context.Context, ref string) (*events.SessionInfo, error) {
	return c.GetFor(ctx, "", ref)
}

// GetFor is Get on a session of access key ak (admins only; empty: the
// caller's own).
func (c *Client) GetFor(ctx context.Context, ak, ref string) (*events.SessionInfo, error) {
	var resp events.SessionInfo
	if err := c.request(ctx, events.OpSessionGet, events.GetRequest{Ref: ref, AccessKey: ak}, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// History returns a session (by id or name) and its events in log order,
// a folded event as the events it stands for (Event.Steps).
func (c *Client) History(ctx context.Context, ref string) (*events.HistoryResponse, error) {
	return c.HistoryFor(ctx, "", ref)
}

// HistoryFor is History of a session of access key ak (admins only;
// empty: the caller's own).
func (c *Client) HistoryFor(ctx context.Context, ak, ref string) (*events.HistoryResponse, error) {
	var resp events.HistoryResponse
	if err := c.request(ctx, events.OpSessionHistory, events.GetRequest{Ref: ref, AccessKey: ak}, &resp); err != nil {
		return nil, err
	}
	resp.Events = events.ExpandAll(resp.Events)
	return &resp, nil
}

// Execute runs code in a live session (Backend.AI's execute); its output
// comes on the run's output subject, which a Watcher follows.
func (c *Client) Execute(ctx context.Context, req events.ExecuteRequest) (*events.ExecuteResponse, error) {
	var resp events.ExecuteResponse
	if err := c.request(ctx, events.OpSessionExecute, req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// Logs returns a session's output so far.
func (c *Client) Logs(ctx context.Context, ref string) (*events.LogsResponse, error) {
	return c.LogsFor(ctx, "", ref)
}

// LogsFor is Logs of a session of access key ak (admins only; empty: the
// caller's own).
func (c *Client) LogsFor(ctx context.Context, ak, ref string) (*events.LogsResponse, error) {
	var resp events.LogsResponse
	if err := c.request(ctx, events.OpSessionLogs, events.GetRequest{Ref: ref, AccessKey: ak}, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// Upload sends one file for a run of a session (which need not exist yet).
func (c *Client) Upload(ctx context.Context, req events.UploadRequest) (*events.UploadResponse, error) {
	var resp events.UploadResponse
	if err := c.request(ctx, events.OpSessionUpload, req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// Images lists the images the gateway admits and their aliases.
func (c *Client) Images(ctx context.Context) (*events.ImageListResponse, error) {
	var resp events.ImageListResponse
	if err := c.request(ctx, events.OpImageList, struct{}{}, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// SetImageAlias points alias at the full image target (admins only).
func (c *Client) SetImageAlias(ctx context.Context, alias, target string) (*events.ImageListResponse, error) {
	var resp events.ImageListResponse
	if err := c.request(ctx, events.OpImageAlias, events.ImageAliasRequest{Alias: alias, Target: target}, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// Download returns one chunk of a file of a session's work directory
// (at most events.MaxDownloadChunk bytes from req.Offset on).
func (c *Client) Download(ctx context.Context, req events.DownloadRequest) (*events.DownloadResponse, error) {
	var resp events.DownloadResponse
	if err := c.request(ctx, events.OpSessionDownload, req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// Files lists a directory of a session's work directory (Path "" the
// work directory itself).
func (c *Client) Files(ctx context.Context, req events.FilesRequest) (*events.FilesResponse, error) {
	var resp events.FilesResponse
	if err := c.request(ctx, events.OpSessionFiles, req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}
