package perms

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
)

// matches reports whether NATS subject subj matches pattern pat ('*' one
// token, '>' one or more trailing tokens).
func matches(pat, subj string) bool {
	p, s := strings.Split(pat, "."), strings.Split(subj, ".")
	for i, t := range p {
		if t == ">" {
			return len(s) > i
		}
		if i >= len(s) || (t != "*" && t != s[i]) {
			return false
		}
	}
	return len(p) == len(s)
}

func allowed(list []string, subj string) bool {
	return slices.ContainsFunc(list, func(p string) bool { return matches(p, subj) })
}

func pubAllowed(p Permissions, subj string) bool {
	return allowed(p.PubAllow, subj) && !allowed(p.PubDeny, subj)
}

func subAllowed(p Permissions, subj string) bool {
	return allowed(p.SubAllow, subj) && !allowed(p.SubDeny, subj)
}

var every = []string{
	streams.Sessions, streams.Work, streams.Output, "KV_" + streams.Agents, "KV_" + streams.Keypairs,
	"KV_" + streams.Leases, "KV_" + ImagesBucket, "KV_" + AdmissionBucket, "OBJ_" + events.UploadBucket,
}

// TestNobodyPublishesEverything: no identity may delete a stream or a
// message, purge any stream but the upload store (gateway and agent),
// publish to the shared inbox or to '>'-wide JetStream subjects; only the
// services that answer tenants may publish to tenant inboxes; each
// subscribes to its own inbox and no other.
func TestNobodyPublishesEverything(t *testing.T) {
	const ak, other = "AKIAAAAAAAAAAAAAAAAA", "AKIABBBBBBBBBBBBBBBB"
	for _, id := range Table() {
		p := id.Permissions
		for _, s := range every {
			for _, op := range []string{"STREAM.DELETE.", "STREAM.MSG.DELETE.", "STREAM.PURGE."} {
				want := op == "STREAM.PURGE." && s == "OBJ_"+events.UploadBucket && (id.Name == Gateway || id.Name == "agent")
				if got := pubAllowed(p, "$JS.API."+op+s); got != want {
					t.Errorf("%s: publish $JS.API.%s%s = %v", id.Name, op, s, got)
				}
			}
		}
		for _, subj := range []string{"x", "_INBOX.x", "$JS.API.STREAM.LIST", "$JS.API.STREAM.NAMES", "$JS.API.ACCOUNT.PURGE.x",
			"$JS.API.STREAM.CREATE.OTHER", "$JS.API.CONSUMER.DELETE.BAI_WORK.bai-agent-other", "$SYS.REQ.USER.AUTH"} {
			if pubAllowed(p, subj) {
				t.Errorf("%s may publish %s", id.Name, subj)
			}
		}
		answers := id.Name == Gateway || id.Name == Registry || id.Name == Auth
		if got := pubAllowed(p, events.InboxPrefix(other)+".x"); got != answers {
			t.Errorf("%s: publish to a tenant inbox = %v", id.Name, got)
		}
		if !subAllowed(p, id.Inbox+".x") {
			t.Errorf("%s cannot read its own inbox %s", id.Name, id.Inbox)
		}
		for _, o := range Table() {
			if o.Inbox != id.Inbox && subAllowed(p, o.Inbox+".x") {
				t.Errorf("%s reads %s's inbox", id.Name, o.Name)
			}
		}
		for _, subj := range []string{"_INBOX.x", "x", events.InboxPrefix(other) + ".x", "bai.session.a.b.c", "bai.work.x", "$KV.x.y"} {
			if subAllowed(p, subj) {
				t.Errorf("%s may subscribe %s", id.Name, subj)
			}
		}
	}
}

// TestEventsByTheirEmitterOnly: each session event is published only by
// the identities that emit it; an agent never a create, a placement, a
// termination order, a cancellation, pending info or a ledger entry, for
// any key.
func TestEventsByTheirEmitterOnly(t *testing.T) {
	emitters := map[string][]events.Name{Gateway: GatewayEvents, Scheduler: SchedulerEvents, "agent": AgentEvents}
	for _, id := range Table() {
		for _, n := range slices.Concat(GatewayEvents, SchedulerEvents, AgentEvents) {
			want := slices.Contains(emitters[id.Name], n)
			for _, subj := range []string{
				"bai.session.AKIAAAAAAAAAAAAAAAAA.s1." + string(n),
				"bai.session.AKIAAAAAAAAAAAAAAAAA.s1." + string(n) + ".ID",
			} {
				if _, err := events.ParseSessionSubject(subj); err != nil {
					continue // not a valid addressing for this event
				}
				if got := pubAllowed(id.Permissions, subj); got != want {
					t.Errorf("%s: publish %s = %v, want %v", id.Name, subj, got, want)
				}
			}
		}
	}
	agent := AgentPermissions("ID")
	for _, subj := range []string{
		"bai.session._ledger.ID.agent_ledger", "bai.session.AKIAAAAAAAAAAAAAAAAA.s1.session_started.ID",
		"bai.session.AKIAAAAAAAAAAAAAAAAA.s1.session_enqueued", "bai.session.AKIAAAAAAAAAAAAAAAAA.s1.session_execute_request.ID",
		"$KV.bai_agents.other", "$KV.bai_keypairs.ak.x", "$JS.API.CONSUMER.CREATE.BAI_WORK.bai-agent-ID",
		"$JS.API.CONSUMER.CREATE.BAI_WORK.bai-agent-ID.bai.work.other",
	} {
		if pubAllowed(agent, subj) {
			t.Errorf("agent may publish %s", subj)
		}
	}
}

// TestSecurityDocShowsTheTable: docs/security.md shows the table as
// enforced (regenerate its block from Markdown() when this fails).
// update rewrites docs/security.md's generated table.
var update = flag.Bool("update", false, "rewrite the generated table in docs/security.md")

func TestSecurityDocShowsTheTable(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "..", "docs", "security.md"))
	if err != nil {
		t.Fatal(err)
	}
	const begin, end = "<!-- perms table: generated by pkg/events/perms.Markdown -->\n", "\n<!-- end of perms table -->"
	s := string(doc)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		t.Fatalf("docs/security.md has no %q ... %q block", begin, end)
	}
	if got := s[i+len(begin) : j]; got != Markdown() {
		if *update {
			out := s[:i+len(begin)] + Markdown() + s[j:]
			if err := os.WriteFile(filepath.Join("..", "..", "..", "docs", "security.md"), []byte(out), 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		t.Errorf("docs/security.md's table is out of date (cd pkg/events/perms && go test -run TestSecurityDocShowsTheTable . -update rewrites it); it should read:\n%s", Markdown())
	}
}

// TestFilesOutOnlyGatewayToItsAgent: only the gateway asks an agent for
// files, each agent reads only the requests addressed to it, and answers
// only on the gateway's inbox; no tenant publishes or reads either side.
func TestFilesOutOnlyGatewayToItsAgent(t *testing.T) {
	const ak = "AKIAAAAAAAAAAAAAAAAA"
	for _, v := range AgentFileVerbs {
		own, _ := events.AgentFilesSubject("ID", v)
		other, _ := events.AgentFilesSubject("other", v)
		for _, id := range Table() {
			wantPub := id.Name == Gateway
			if got := pubAllowed(id.Permissions, own); got != wantPub {
				t.Errorf("%s: publish %s = %v", id.Name, own, got)
			}
			if subAllowed(id.Permissions, other) {
				t.Errorf("%s may read %s", id.Name, other)
			}
			if got := subAllowed(id.Permissions, own); got != (id.Name == "agent") {
				t.Errorf("%s: subscribe %s = %v", id.Name, own, got)
			}
		}
		for _, admin := range []bool{false, true} {
			if u := UserPermissions(ak, admin); pubAllowed(u, own) || subAllowed(u, own) {
				t.Errorf("user (admin %v) may use %s", admin, own)
			}
		}
	}
	agent := AgentPermissions("ID")
	if !pubAllowed(agent, events.ServiceInboxPrefix(Gateway)+".x.y") {
		t.Error("agent cannot answer the gateway")
	}
	for _, subj := range []string{events.ServiceInboxPrefix(Registry) + ".x", events.ServiceInboxPrefix(Scheduler) + ".x",
		events.InboxPrefix(ak) + ".x", events.AgentInboxPrefix("other") + ".x"} {
		if pubAllowed(agent, subj) {
			t.Errorf("agent may publish %s", subj)
		}
	}
}
