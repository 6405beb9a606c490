package server

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/perms"
	"github.com/bai-sh/bai/pkg/events/streams"
	"github.com/bai-sh/bai/services/gateway"
	"github.com/bai-sh/bai/services/registry"
)

// allStreams are every stream and bucket of a running server (the upload
// store exists once a file was uploaded).
var allStreams = []string{
	streams.Sessions, streams.Work, streams.Output,
	"KV_" + streams.Agents, "KV_" + streams.Keypairs, "KV_" + streams.Leases,
	"KV_" + perms.ImagesBucket, "KV_" + perms.AdmissionBucket, "OBJ_" + events.UploadBucket,
}

// streamStates reads every stream's state from the server itself (its
// monitoring API: no client permission involved).
func (r *running) streamStates(t *testing.T) map[string]natsserver.StreamState {
	t.Helper()
	r.srv.mu.Lock()
	ns := r.srv.ns
	r.srv.mu.Unlock()
	jsz, err := ns.Jsz(&natsserver.JSzOptions{Accounts: true, Streams: true})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]natsserver.StreamState{}
	for _, acc := range jsz.AccountDetails {
		for _, st := range acc.Streams {
			out[st.Name] = st.State
		}
	}
	return out
}

// TestReplySubjectInjection: a tenant (and an admin) publishes to every
// API endpoint with reply subjects that would delete or purge every
// stream, write a KV key, an object, another tenant's inbox, log, output
// or work queue. Every such request is refused without an answer
// (reply_subject_refused, once per request); afterwards every stream,
// bucket and keypair is intact and nothing was stored. The legit reply
// path still works, and no service hit a permissions violation.
func TestReplySubjectInjection(t *testing.T) {
	var logs natstest.SyncBuffer
	r := startServerWith(t, Config{AgentCapacity: map[string]string{"cpu": "4", "mem": "4g"},
		Log: zerolog.New(&logs).Level(zerolog.InfoLevel)})
	a, b := r.newTenant(t, "user", ""), r.newTenant(t, "user", "")
	admin := tenant{r.srv.Credentials().AccessKey, r.srv.Credentials().SecretKey}
	sid := r.startSleeper(t, b)
	bc := r.clientAs(t, b)
	if _, err := bc.Upload(context.Background(), events.UploadRequest{SessionID: sid, RunID: "up1", Path: "x.py", Data: []byte("print(1)")}); err != nil {
		t.Fatal(err)
	}
	agentID := r.srv.auth.agentID

	// B listens on its own inbox: nothing may land there.
	bIn := r.rawAs(t, b)
	bSub, err := bIn.nc.SubscribeSync(events.InboxPrefix(b.ak) + ".>")
	if err != nil {
		t.Fatal(err)
	}
	if err := bIn.nc.Flush(); err != nil {
		t.Fatal(err)
	}

	var replies []string
	for _, s := range allStreams {
		replies = append(replies, "$JS.API.STREAM.DELETE."+s, "$JS.API.STREAM.PURGE."+s, "$JS.API.STREAM.MSG.DELETE."+s)
	}
	bLog, _ := events.SessionEventSubject(b.ak, sid, events.EventTerminated)
	bWork, _ := events.AgentWorkSubject(b.ak, sid, events.EventTerminating, agentID)
	bOut, _ := events.OutputSubject(b.ak, sid, "x")
	bQueue, _ := events.AgentQueueSubject(agentID)
	bAPI, _ := events.APISubject(b.ak, events.OpSessionTerminate)
	replies = append(replies,
		"$JS.API.CONSUMER.DELETE."+streams.Sessions+"."+perms.RegistryDurable,
		"$JS.API.CONSUMER.DELETE."+streams.Work+"."+perms.AgentDurable(agentID),
		"$KV."+streams.Keypairs+".ak."+b.ak, "$KV."+streams.Keypairs+".ak."+a.ak, "$KV."+streams.Agents+"."+agentID,
		"$KV."+perms.ImagesBucket+".x", "$O."+events.UploadBucket+".M.x", "$O."+events.UploadBucket+".C.x",
		events.InboxPrefix(b.ak)+".x", "_INBOX_"+b.ak+".x", "_INBOX.x", events.ServiceInboxPrefix(perms.Gateway)+".x",
		bLog, bWork, bOut, bQueue, bAPI, "$SYS.REQ.USER.AUTH",
		"", events.InboxPrefix(a.ak), events.InboxPrefix(a.ak)+".*", events.InboxPrefix(a.ak)+".>",
		events.InboxPrefix(a.ak)+"..x", events.InboxPrefix(a.ak)+".x y",
	)
	// Bodies that would do harm if the request ran: B's keypair removed,
	// B's session terminated, a session created, a policy added.
	body := func(op string) []byte {
		var v any = struct{}{}
		switch op {
		case events.OpSessionCreate:
			v = events.CreateRequest{Image: "python"}
		case events.OpSessionTerminate:
			v = events.TerminateRequest{SessionID: sid, AccessKey: b.ak}
		case events.OpSessionExecute:
			v = events.ExecuteRequest{SessionID: sid, Run: events.RunSpec{ID: "inj", Code: "1"}}
		case events.OpSessionUpload:
			v = events.UploadRequest{SessionID: sid, RunID: "inj", Path: "y.py", Data: []byte("1")}
		case events.OpImageAlias:
			v = events.ImageAliasRequest{Alias: "evil", Target: "python:3.11-debian12"}
		case events.OpKeypairRemove, events.OpKeypairRotate, events.OpKeypairInfo:
			v = events.KeypairRequest{AccessKey: b.ak}
		case events.OpKeypairAdd:
			v = events.KeypairAddRequest{Role: "admin"}
		case events.OpPolicyAdd, events.OpPolicySet:
			v = events.PolicyInfo{Name: "evil", MaxConcurrentSessions: 1}
		case events.OpSessionGet, events.OpSessionHistory, events.OpSessionLogs:
			v = events.GetRequest{Ref: sid, AccessKey: b.ak}
		}
		data, _ := json.Marshal(v)
		return data
	}
	ops := slices.Concat(perms.GatewayOps, perms.RegistryOps, perms.AuthOps)

	before := r.streamStates(t)
	for _, s := range allStreams {
		if _, ok := before[s]; !ok {
			t.Fatalf("stream %s missing before the test", s)
		}
	}
	sent := 0
	for _, who := range []tenant{a, admin} {
		rc := r.rawAs(t, who)
		for _, op := range ops {
			subj, _ := events.APISubject(who.ak, op)
			for _, reply := range replies {
				err := rc.nc.PublishMsg(&nats.Msg{Subject: subj, Reply: reply, Data: body(op)})
				if errors.Is(err, nats.ErrBadSubject) {
					continue // nats.go itself refuses to send it
				}
				if err != nil {
					t.Fatal(err)
				}
				sent++
			}
		}
		// No tenant publishes the services' own API subjects.
		internal, _ := events.ServiceAPISubject(who.ak, events.OpSessionGet)
		if err := rc.nc.PublishRequest(internal, events.InboxPrefix(who.ak)+".x", body(events.OpSessionGet)); err != nil {
			t.Fatal(err)
		}
		rc.denied(t, "publish", internal)
		if err := rc.nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	// Each request is refused once, by the service that serves its op.
	// (Not fatal: what the server's permissions alone hold is checked
	// below either way.)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		n := strings.Count(logs.String(), `"reply_subject_refused"`)
		if n == sent {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%d of %d requests refused", n, sent)
			break
		}
	}

	// Every stream and bucket is there; the ones nobody writes meanwhile
	// are unchanged to the message (the leases and the agents' heartbeats
	// move on their own).
	after := r.streamStates(t)
	for _, s := range allStreams {
		st, ok := after[s]
		if !ok {
			t.Fatalf("stream %s is gone", s)
		}
		switch s {
		case "KV_" + streams.Leases, "KV_" + streams.Agents:
			if st.Msgs == 0 {
				t.Errorf("%s emptied", s)
			}
		default:
			if b := before[s]; st.Msgs != b.Msgs || st.FirstSeq != b.FirstSeq || st.LastSeq != b.LastSeq {
				t.Errorf("%s changed: before %d msgs %d..%d, after %d msgs %d..%d", s, b.Msgs, b.FirstSeq, b.LastSeq, st.Msgs, st.FirstSeq, st.LastSeq)
			}
		}
	}
	if m, err := bSub.NextMsg(100 * time.Millisecond); err == nil {
		t.Fatalf("B's inbox got %s %q", m.Subject, m.Data)
	}
	// The legit path: B's keypair and session are intact, A's and the
	// admin's requests are answered on their own inboxes.
	info, err := r.clientAs(t, b).Get(context.Background(), sid)
	if err != nil || info.Status != events.StatusRunning {
		t.Fatalf("B's session after the attempts: %v %+v", err, info)
	}
	if _, err := r.clientAs(t, a).List(context.Background(), events.ListRequest{}); err != nil {
		t.Fatal(err)
	}
	kps, err := r.clientAs(t, admin).ListKeypairs(context.Background())
	if err != nil || len(kps.Keypairs) != 3 {
		t.Fatalf("keypairs after the attempts: %v %+v", err, kps)
	}
	for _, bad := range []string{"nats_error", "Permissions Violation"} {
		if strings.Contains(logs.String(), bad) {
			t.Errorf("log has %s:\n%s", bad, grepLines(logs.String(), bad))
		}
	}
}

// grepLines are the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for l := range strings.SplitSeq(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestErrorAnswersHaveABody: an error answer of every service carries its
// code in micro's headers and a JSON body, never an empty one (an empty
// body is a valid request to much of the JetStream API).
func TestErrorAnswersHaveABody(t *testing.T) {
	r := startServer(t, t.TempDir())
	a := r.newTenant(t, "user", "")
	rc := r.rawAs(t, a)
	for op, want := range map[string]string{
		events.OpSessionTerminate: events.CodeNotFound,  // gateway
		events.OpSessionGet:       events.CodeNotFound,  // registry
		events.OpKeypairList:      events.CodeForbidden, // auth
		events.OpSessionCreate:    events.CodeInvalid,   // gateway, answered from its goroutine
	} {
		subj, _ := events.APISubject(a.ak, op)
		data := []byte(`{"session_id":"nope","ref":"nope"}`)
		if op == events.OpSessionCreate {
			data = []byte(`{"image":"cobol"}`)
		}
		msg, err := rc.nc.Request(subj, data, 10*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", op, err)
		}
		var body events.ErrorReply
		if err := json.Unmarshal(msg.Data, &body); err != nil || body.Error.Code != want || body.Error.Description == "" {
			t.Fatalf("%s: body %q (%v)", op, msg.Data, err)
		}
		var apiErr *events.APIError
		if err := events.ErrorFromHeader(map[string][]string(msg.Header)); !errors.As(err, &apiErr) || apiErr.Code != want ||
			apiErr.Description != body.Error.Description {
			t.Fatalf("%s: header error %v, body %+v", op, err, body)
		}
	}
}

// serviceConn connects as service identity user with its password and
// own inbox prefix.
func (r *running) serviceConn(t *testing.T, user, inbox string) *rawConn {
	t.Helper()
	r.srv.mu.Lock()
	pass := r.srv.auth.passwords[user]
	r.srv.mu.Unlock()
	rc := &rawConn{errs: make(chan error, 256)}
	var err error
	rc.nc, err = nats.Connect(r.srv.ClientURL(), nats.UserInfo(user, pass), nats.NoReconnect(), nats.CustomInboxPrefix(inbox),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case rc.errs <- err:
			default:
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rc.nc.Close)
	return rc
}

// TestServiceUsersHaveLeastPrivilege connects as each service identity
// (gateway, registry, scheduler, auth, the agent) and shows that the
// server denies what it never needs: deleting or purging any stream,
// writing a bucket it does not own, another identity's events, replies
// outside the inboxes, reading others' inboxes or the whole log. A
// JetStream delete of the keypairs bucket fails and the bucket stays.
func TestServiceUsersHaveLeastPrivilege(t *testing.T) {
	r := startServer(t, t.TempDir())
	b := r.newTenant(t, "user", "")
	sid := r.startSleeper(t, b)
	agentID := r.srv.auth.agentID
	enqueue, _ := events.SessionEventSubject(b.ak, sid, events.EventEnqueued)
	schedule, _ := events.AgentWorkSubject(b.ak, sid, events.EventScheduled, agentID)
	terminating, _ := events.AgentWorkSubject(b.ak, sid, events.EventTerminating, agentID)
	cancel, _ := events.SessionEventSubject(b.ak, sid, events.EventCancelled)
	ledger, _ := events.AgentLedgerSubject(agentID)
	output, _ := events.OutputSubject(b.ak, sid, "x")
	started, _ := events.SessionEventSubject(b.ak, sid, events.EventStarted)

	type identity struct {
		user, inbox string
		// may: the denied-to-all list's entries this identity needs.
		may []string
		// alsoDenied: denied to this one, needed by some other.
		alsoDenied []string
	}
	ids := []identity{
		{perms.ServiceUser(perms.Gateway), events.ServiceInboxPrefix(perms.Gateway),
			[]string{"$JS.API.STREAM.PURGE.OBJ_" + events.UploadBucket, enqueue, "$O." + events.UploadBucket + ".C.x"},
			[]string{schedule, cancel, ledger, started, output, "$KV." + streams.Leases + ".x"}},
		{perms.ServiceUser(perms.Registry), events.ServiceInboxPrefix(perms.Registry), nil,
			[]string{enqueue, schedule, started, output, "$KV." + perms.ImagesBucket + ".x"}},
		{perms.ServiceUser(perms.Scheduler), events.ServiceInboxPrefix(perms.Scheduler), []string{schedule, cancel, terminating, ledger},
			[]string{enqueue, started, output, events.InboxPrefix(b.ak) + ".x", "$KV." + perms.AdmissionBucket + ".x"}},
		{perms.ServiceUser(perms.Auth), events.ServiceInboxPrefix(perms.Auth), []string{"$KV." + streams.Keypairs + ".ak." + b.ak},
			[]string{enqueue, schedule, started, output, "$KV." + streams.Agents + "." + agentID}},
		{agentUser, events.AgentInboxPrefix(agentID), []string{"$JS.API.STREAM.PURGE.OBJ_" + events.UploadBucket},
			[]string{enqueue, schedule, terminating, cancel, ledger, events.InboxPrefix(b.ak) + ".x", "$KV." + streams.Agents + ".other"}},
	}
	var deniedToAll []string
	for _, s := range allStreams {
		deniedToAll = append(deniedToAll, "$JS.API.STREAM.DELETE."+s, "$JS.API.STREAM.PURGE."+s, "$JS.API.STREAM.MSG.DELETE."+s)
	}
	deniedToAll = append(deniedToAll,
		"$JS.API.CONSUMER.DELETE."+streams.Work+".bai-agent-other", "$JS.API.STREAMS", "$JS.API.STREAM.NAMES",
		"$KV."+streams.Keypairs+".ak."+b.ak, "$O."+events.UploadBucket+".C.x", enqueue,
		"_INBOX.x", "_INBOX_"+b.ak+".x", "$SYS.REQ.USER.AUTH", "bai.work."+agentID, "bai.live.session.x",
		"bai.api."+b.ak+".session.terminate", "bai.internal."+b.ak+".keypair.rm",
	)
	for _, id := range ids {
		t.Run(id.user, func(t *testing.T) {
			rc := r.serviceConn(t, id.user, id.inbox)
			var denied []string
			for _, s := range slices.Concat(deniedToAll, id.alsoDenied) {
				if !slices.Contains(id.may, s) && !slices.Contains(denied, s) {
					denied = append(denied, s)
				}
			}
			for _, subj := range denied {
				if err := rc.nc.Publish(subj, []byte("{}")); err != nil {
					t.Fatal(err)
				}
				rc.denied(t, "publish", subj)
			}
			for _, subj := range []string{">", "bai.>", events.AllSessionsFilter, events.LiveAllSessionsFilter, "_INBOX.>",
				events.TenantInboxes, events.InboxPrefix(b.ak) + ".>", "$JS.API.>", "$KV.>", "bai.work.>"} {
				if _, err := rc.nc.SubscribeSync(subj); err != nil {
					t.Fatal(err)
				}
				rc.denied(t, "subscribe", subj)
			}
			for _, other := range []string{perms.Gateway, perms.Registry, perms.Scheduler, perms.Auth} {
				if inbox := events.ServiceInboxPrefix(other); inbox != id.inbox {
					if _, err := rc.nc.SubscribeSync(inbox + ".>"); err != nil {
						t.Fatal(err)
					}
					rc.denied(t, "subscribe", inbox+".>")
				}
			}
			// Through the JetStream API: the call is refused, the bucket stays.
			js, err := jetstream.New(rc.nc)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if err := js.DeleteStream(ctx, "KV_"+streams.Keypairs); err == nil {
				t.Fatal("deleted the keypairs bucket")
			}
			if _, ok := r.streamStates(t)["KV_"+streams.Keypairs]; !ok {
				t.Fatal("the keypairs bucket is gone")
			}
		})
	}
	// Everything still works: B's session answers.
	if info, err := r.clientAs(t, b).Get(context.Background(), sid); err != nil || info.Status != events.StatusRunning {
		t.Fatalf("after: %v %+v", err, info)
	}
}

// TestTableNamesTheServicesOwnNames: the names the permission table
// spells out are the services' own.
func TestTableNamesTheServicesOwnNames(t *testing.T) {
	for got, want := range map[string]string{
		gateway.ImagesBucket:       perms.ImagesBucket,
		gateway.AdmissionBucket:    perms.AdmissionBucket,
		registry.DefaultDurable:    perms.RegistryDurable,
		gateway.KeypairsBucket:     streams.Keypairs,
		gateway.AuthCalloutSubject: perms.AuthCalloutSubject,
	} {
		if got != want {
			t.Errorf("service name %q, table %q", got, want)
		}
	}
}
