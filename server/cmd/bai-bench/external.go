package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/tools/bai/client"
)

// target is where the sessions scenarios send their sessions: the
// in-process cluster, or a bai running elsewhere (-nats-url /
// -credentials): a one-process bai-server or a NATS cluster with each
// service its own process.
type target struct {
	ak       string
	prefix   string // session ids: prefix + a 7-digit number
	external bool
	connect  func(context.Context) (*client.Client, error)
	stop     func() error
}

func (t *target) sid(i int) string { return fmt.Sprintf("%s%07d", t.prefix, i) }

// index is the number in a session id of this run, or -1.
func (t *target) index(sid string) int {
	rest, ok := strings.CutPrefix(sid, t.prefix)
	if !ok || len(rest) != 7 {
		return -1
	}
	n, err := strconv.ParseUint(rest, 10, 31)
	if err != nil {
		return -1
	}
	return int(n)
}

// external reports whether o drives a running bai (-nats-url,
// -credentials) rather than one the bench starts.
func (o options) external() bool { return o.natsURL != "" || o.credentials != "" }

// externalCredentials is the key and URLs the bench drives a running bai
// with: -credentials FILE (a bai credentials file, as bai-server and a
// gateway's --bootstrap-admin-file write), else BAI_ACCESS_KEY and
// BAI_SECRET_KEY; -nats-url, when set, replaces the file's URL.
func externalCredentials(o options) (client.Credentials, error) {
	var c client.Credentials
	if o.credentials != "" {
		var err error
		if c, err = client.ReadCredentials(o.credentials); err != nil {
			return c, fmt.Errorf("-credentials: %w", err)
		}
	} else {
		c.AccessKey, c.SecretKey = os.Getenv(client.EnvAccessKey), os.Getenv(client.EnvSecretKey)
	}
	if o.natsURL != "" {
		c.NATSURL = o.natsURL
	}
	switch {
	case c.NATSURL == "":
		return c, errors.New("no NATS URL: -nats-url URLS, or a -credentials file that names one")
	case c.AccessKey == "" || c.SecretKey == "":
		return c, fmt.Errorf("no key for %s: -credentials FILE, or %s and %s", c.NATSURL, client.EnvAccessKey, client.EnvSecretKey)
	}
	return c, nil
}

// externalTarget connects to a running bai. Its session ids carry a
// prefix of this run: the log of a running bai keeps earlier runs'.
func externalTarget(ctx context.Context, o options) (*target, error) {
	creds, err := externalCredentials(o)
	if err != nil {
		return nil, err
	}
	connect := func(ctx context.Context) (*client.Client, error) {
		return client.Connect(ctx, client.Options{URL: creds.NATSURL, AccessKey: creds.AccessKey, SecretKey: creds.SecretKey,
			Timeout:     30 * time.Second,
			NATSOptions: []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(200 * time.Millisecond)}})
	}
	// The key works and the services answer before anything is timed.
	cl, err := connect(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", redactURL(creds.NATSURL), err)
	}
	defer cl.Close()
	if _, err := cl.List(ctx, events.ListRequest{Limit: 1}); err != nil {
		return nil, fmt.Errorf("bai at %s: %w", redactURL(creds.NATSURL), err)
	}
	fmt.Printf("against a running bai at %s as %s: the services, NATS and the agents run outside this process (the CPU and RSS figures are the bench's alone)\n",
		redactURL(creds.NATSURL), creds.AccessKey)
	return &target{ak: creds.AccessKey, prefix: "bench-" + randHex(4) + "-", external: true,
		connect: connect, stop: func() error { return nil }}, nil
}

// redactURL hides the passwords of URLs such as nats://user:pass@host.
func redactURL(urls string) string {
	var out []string
	for _, u := range strings.Split(urls, ",") {
		if at := strings.LastIndex(u, "@"); at >= 0 {
			if s := strings.Index(u, "://"); s >= 0 && s < at {
				u = u[:s+3] + "***@" + u[at+1:]
			}
		}
		out = append(out, u)
	}
	return strings.Join(out, ",")
}
