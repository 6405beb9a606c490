package events

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestCanTransition(t *testing.T) {
	tests := []struct {
		from, to Status
		want     bool
	}{
		{StatusNone, StatusPending, true},
		{StatusNone, StatusRunning, false},
		{StatusPending, StatusScheduled, true},
		{StatusPending, StatusRunning, false},
		{StatusScheduled, StatusPulling, true},
		{StatusScheduled, StatusTerminating, false},
		{StatusPrepared, StatusCreating, true}, // Backend.AI's gap, fixed
		{StatusCreating, StatusRunning, true},
		{StatusRunning, StatusSuspended, true},
		{StatusSuspended, StatusRunning, true},
		{StatusRunning, StatusRunning, false},
		{StatusRunning, StatusTerminated, true},
		{StatusRunning, StatusPending, false},
		{StatusTerminating, StatusTerminated, true},
		{StatusTerminating, StatusRunning, false},
		{StatusError, StatusTerminated, true},
		{StatusTerminated, StatusRunning, false},
		{StatusCancelled, StatusPending, false},
	}
	for _, tt := range tests {
		t.Run(string(tt.from)+"->"+string(tt.to), func(t *testing.T) {
			if got := CanTransition(tt.from, tt.to); got != tt.want {
				t.Fatalf("CanTransition(%q, %q) = %v, want %v", tt.from, tt.to, got, tt.want)
			}
		})
	}
}

func TestFinalStatusesHaveNoMoves(t *testing.T) {
	for _, from := range AllStatuses {
		for _, to := range AllStatuses {
			if from.Final() && CanTransition(from, to) {
				t.Errorf("final %s may move to %s", from, to)
			}
		}
		if !from.Valid() {
			t.Errorf("%s not valid", from)
		}
	}
	if Status("BOGUS").Valid() || StatusNone.Valid() {
		t.Fatal("invalid statuses reported valid")
	}
}

func TestEventNamesMoveToKnownStatuses(t *testing.T) {
	for n := range names {
		if st := n.Status(); st != StatusNone && !st.Valid() {
			t.Errorf("event %s moves to unknown status %q", n, st)
		}
		if !ValidToken(string(n)) {
			t.Errorf("event name %s is not a subject token", n)
		}
	}
}

func TestSubjects(t *testing.T) {
	subj, err := SessionEventSubject("AKIA1", "s-1", EventEnqueued)
	if err != nil || subj != "bai.session.AKIA1.s-1.session_enqueued" {
		t.Fatalf("SessionEventSubject = %q, %v", subj, err)
	}
	subj, err = AgentWorkSubject("AKIA1", "s-1", EventScheduled, "agent-1")
	if err != nil || subj != "bai.session.AKIA1.s-1.session_scheduled.agent-1" {
		t.Fatalf("AgentWorkSubject = %q, %v", subj, err)
	}
	got, err := ParseSessionSubject(subj)
	if err != nil || got != (SessionSubject{AccessKey: "AKIA1", SessionID: "s-1", Name: EventScheduled, AgentID: "agent-1"}) {
		t.Fatalf("ParseSessionSubject = %+v, %v", got, err)
	}
	bad := []struct{ name, ak, sid string }{
		{"dot", "A.B", "s"}, {"star", "A", "*"}, {"gt", ">", "s"}, {"empty", "", "s"},
		{"space", "A B", "s"}, {"long", "A", strings.Repeat("x", MaxTokenLen+1)}, {"nul", "A\x00", "s"},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			if _, err := SessionEventSubject(b.ak, b.sid, EventEnqueued); !errors.Is(err, ErrBadSubject) {
				t.Fatalf("want ErrBadSubject, got %v", err)
			}
		})
	}
	for _, s := range []string{
		"bai.session.A.s", "bai.session.A.s.nope", "bai.session.A.s.session_enqueued.agent",
		"bai.session.A.s.session_scheduled", "bai.out.A.s.r", "bai.session.A.s.session_enqueued.x.y",
	} {
		if _, err := ParseSessionSubject(s); err == nil {
			t.Errorf("ParseSessionSubject(%q) accepted", s)
		}
	}
	if _, err := ParseSessionSubject("bai.session.A.s.session_cancelled"); err != nil {
		t.Errorf("unplaced cancel refused: %v", err)
	}
	if _, err := ParseSessionSubject("bai.session.A.s.session_cancelled.agent-1"); err != nil {
		t.Errorf("placed cancel refused: %v", err)
	}
	ak, op, err := ParseAPISubject("bai.api.AKIA1.session.create")
	if err != nil || ak != "AKIA1" || op != OpSessionCreate {
		t.Fatalf("ParseAPISubject = %q %q %v", ak, op, err)
	}
}

func TestLiveSubjects(t *testing.T) {
	if f, err := LiveSessionFilter("AK", "s1"); err != nil || f != "bai.live.session.AK.s1.>" {
		t.Fatalf("LiveSessionFilter = %q, %v", f, err)
	}
	if f, err := LiveOwnerSessionsFilter("AK"); err != nil || f != "bai.live.session.AK.>" {
		t.Fatalf("LiveOwnerSessionsFilter = %q, %v", f, err)
	}
	if _, err := LiveSessionFilter("A.K", "s1"); !errors.Is(err, ErrBadSubject) {
		t.Fatalf("LiveSessionFilter of a bad token: %v", err)
	}
	if s, err := FromLive("bai.live.session.AK.s1.session_started"); err != nil || s != "bai.session.AK.s1.session_started" {
		t.Fatalf("FromLive = %q, %v", s, err)
	}
	if f, err := LiveOutputFilter("AK", "s1"); err != nil || f != "bai.live.out.AK.s1.>" {
		t.Fatalf("LiveOutputFilter = %q, %v", f, err)
	}
	if f, err := LiveOwnerOutputFilter("AK"); err != nil || f != "bai.live.out.AK.>" {
		t.Fatalf("LiveOwnerOutputFilter = %q, %v", f, err)
	}
	if s, err := FromLive("bai.live.out.AK.s1.r"); err != nil || s != "bai.out.AK.s1.r" {
		t.Fatalf("FromLive of output = %q, %v", s, err)
	}
	for _, bad := range []string{"bai.session.AK.s1.session_started", "bai.out.AK.s1.r", "bai.live.api.AK.x", "bai.live"} {
		if _, err := FromLive(bad); !errors.Is(err, ErrBadSubject) {
			t.Errorf("FromLive(%q) accepted", bad)
		}
	}
}

func TestWorkQueueSubjects(t *testing.T) {
	if q, err := AgentQueueSubject("agent-1"); err != nil || q != "bai.work.agent-1" {
		t.Fatalf("AgentQueueSubject = %q, %v", q, err)
	}
	if _, err := AgentQueueSubject("a.>"); !errors.Is(err, ErrBadSubject) {
		t.Fatalf("AgentQueueSubject of a wildcard: %v", err)
	}
	src := "BAI_SESSIONS 12 " + WorkSourceFilter + " " + WorkQueueTransform + " bai.session.AK.s1.session_scheduled.agent-1 8dqlqIUV"
	if subj, err := WorkOrigin(src, "agent-1"); err != nil || subj != "bai.session.AK.s1.session_scheduled.agent-1" {
		t.Fatalf("WorkOrigin = %q, %v", subj, err)
	}
	for name, c := range map[string]struct{ src, agent string }{
		"other agent":    {src, "agent-2"},
		"no header":      {"", "agent-1"},
		"short":          {"BAI_SESSIONS 12 x y", "agent-1"},
		"not work":       {"BAI_SESSIONS 12 x y bai.session.AK.s1.session_started", "agent-1"},
		"not a session":  {"BAI_SESSIONS 12 x y bai.out.AK.s1.r.agent-1", "agent-1"},
		"wildcard agent": {"BAI_SESSIONS 12 x y bai.session.AK.s1.session_scheduled.*", "*"},
	} {
		if _, err := WorkOrigin(c.src, c.agent); !errors.Is(err, ErrBadSubject) {
			t.Errorf("%s: WorkOrigin accepted it: %v", name, err)
		}
	}
}

func TestDecode(t *testing.T) {
	ev := Event{V: Version, ID: "e1", Name: EventStarted, Time: time.Now().UTC(), AccessKey: "AK", SessionID: "s1"}
	data, _ := json.Marshal(ev)
	if _, err := Decode("bai.session.AK.s1.session_started", data); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	ledger := Event{V: Version, ID: "l1", Name: EventAgentLedger, AccessKey: LedgerOwner, SessionID: "a1", AgentID: "a1",
		Reservations: []Reservation{{AccessKey: "AK", SessionID: "s1", Slots: map[string]string{"cpu": "1"}, Seq: 7}}}
	data, _ = json.Marshal(ledger)
	if got, err := Decode("bai.session._ledger.a1.agent_ledger", data); err != nil || len(got.Reservations) != 1 || got.Reservations[0].Seq != 7 {
		t.Fatalf("Decode ledger: %+v %v", got, err)
	}
	data, _ = json.Marshal(ev)
	cases := map[string]struct {
		subj string
		data []byte
	}{
		"other session":              {"bai.session.AK.s2.session_started", data},
		"other owner":                {"bai.session.BK.s1.session_started", data},
		"other name":                 {"bai.session.AK.s1.kernel_creating", data},
		"not json":                   {"bai.session.AK.s1.session_started", []byte("{")},
		"future version":             {"bai.session.AK.s1.session_started", []byte(`{"v":99,"id":"x","name":"session_started","access_key":"AK","session_id":"s1"}`)},
		"no id":                      {"bai.session.AK.s1.session_started", []byte(`{"v":1,"name":"session_started","access_key":"AK","session_id":"s1"}`)},
		"enqueued bare":              {"bai.session.AK.s1.session_enqueued", []byte(`{"v":1,"id":"x","name":"session_enqueued","access_key":"AK","session_id":"s1"}`)},
		"agent mismatch":             {"bai.session.AK.s1.session_terminating.a2", []byte(`{"v":1,"id":"x","name":"session_terminating","access_key":"AK","session_id":"s1","agent_id":"a1"}`)},
		"reservation off the ledger": {"bai.session.AK.s1.session_started", []byte(`{"v":1,"id":"x","name":"session_started","access_key":"AK","session_id":"s1","reservations":[{"access_key":"AK","session_id":"s1"}]}`)},
		"bad reservation":            {"bai.session._ledger.a1.agent_ledger", []byte(`{"v":1,"id":"x","name":"agent_ledger","access_key":"_ledger","session_id":"a1","reservations":[{"access_key":"A.K","session_id":"s1"}]}`)},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := Decode(c.subj, c.data); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestAPIErrorCodes(t *testing.T) {
	err := Errorf(ErrNotFound, "session %q not found", "x")
	if CodeOf(err) != CodeNotFound {
		t.Fatalf("CodeOf = %s", CodeOf(err))
	}
	got := ErrorFromHeader(map[string][]string{HeaderErrorCode: {CodeOf(err)}, HeaderError: {err.Error()}})
	if !errors.Is(got, ErrNotFound) || errors.Is(got, ErrInvalid) || got.Error() != err.Error() {
		t.Fatalf("round trip: %v", got)
	}
	if ErrorFromHeader(map[string][]string{}) != nil {
		t.Fatal("no error header gave an error")
	}
	if CodeOf(errors.New("boom")) != CodeInternal {
		t.Fatal("unknown error not internal")
	}
}

func FuzzParseSessionSubject(f *testing.F) {
	f.Add("bai.session.AK.s1.session_started")
	f.Add("bai.session.AK.s1.session_scheduled.a1")
	f.Add("bai.session.*.*.*.a1")
	f.Add("bai.session..s.x")
	f.Fuzz(func(t *testing.T, subj string) {
		s, err := ParseSessionSubject(subj)
		if err != nil {
			return
		}
		var rebuilt string
		if s.AgentID != "" {
			rebuilt, err = AgentWorkSubject(s.AccessKey, s.SessionID, s.Name, s.AgentID)
		} else {
			rebuilt, err = SessionEventSubject(s.AccessKey, s.SessionID, s.Name)
		}
		if err != nil || rebuilt != subj {
			t.Fatalf("parse/build mismatch: %q -> %+v -> %q, %v", subj, s, rebuilt, err)
		}
	})
}

func FuzzSessionEventSubject(f *testing.F) {
	f.Add("AKIA1", "s-1", "session_enqueued")
	f.Add("a.b", "*", ">")
	f.Fuzz(func(t *testing.T, ak, sid, name string) {
		subj, err := SessionEventSubject(ak, sid, Name(name))
		if err != nil {
			return
		}
		if strings.Count(subj, ".") != 4 || strings.ContainsAny(subj, "*> \t\r\n") {
			t.Fatalf("unsafe subject %q", subj)
		}
		if Name(name).Known() {
			if s, err := ParseSessionSubject(subj); err != nil || s.AccessKey != ak || s.SessionID != sid {
				t.Fatalf("round trip %q: %+v %v", subj, s, err)
			}
		}
	})
}

func FuzzDecode(f *testing.F) {
	f.Add("bai.session.AK.s1.session_started", []byte(`{"v":1,"id":"x","name":"session_started","access_key":"AK","session_id":"s1"}`))
	f.Fuzz(func(t *testing.T, subj string, data []byte) {
		ev, err := Decode(subj, data)
		if err != nil {
			return
		}
		if want, _ := EventSubject(ev); want != subj {
			t.Fatalf("decoded event for %q belongs on %q", subj, want)
		}
	})
}
