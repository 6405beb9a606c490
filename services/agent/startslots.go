package agent

import (
	"context"
	"sync"
)

// startConcurrency is how many kernels an agent starts at once: a slow
// start (an image pulled) holds the others back no longer, and the
// lifecycle events and state commits of several starts overlap.
const startConcurrency = 16

// startsPerKey is how many of them may be one access key's, so that one
// key's slow starts (many sessions of an image that takes minutes to
// pull) leave slots to the other keys. It is what one key had before
// keys had a share (8): a key alone starts as many kernels at once as
// then (a cap of 4 measured 1.08-1.26x the process's CPU a batch
// session in three rounds: fewer starts at once group fewer commits).
const startsPerKey = startConcurrency / 2

// startSlots bounds the kernel starts under way on the agent: at most
// total at once, and at most perKey of one access key. Waiters of one key
// are served in the order they came.
type startSlots struct {
	all    chan struct{}
	perKey int

	mu   sync.Mutex
	keys map[string]*keySlots // only keys with a start under way or waiting
}

type keySlots struct {
	sem   chan struct{}
	users int
}

func newStartSlots(total, perKey int) *startSlots {
	return &startSlots{all: make(chan struct{}, total), perKey: perKey, keys: map[string]*keySlots{}}
}

// take waits for a slot of access key ak, then for one of all. It
// returns the function that gives both back, or false when ctx ended
// first (nothing is held then).
func (sl *startSlots) take(ctx context.Context, ak string) (release func(), ok bool) {
	sl.mu.Lock()
	ks := sl.keys[ak]
	if ks == nil {
		ks = &keySlots{sem: make(chan struct{}, sl.perKey)}
		sl.keys[ak] = ks
	}
	ks.users++
	sl.mu.Unlock()
	leave := func() {
		sl.mu.Lock()
		if ks.users--; ks.users == 0 {
			delete(sl.keys, ak)
		}
		sl.mu.Unlock()
	}
	select {
	case ks.sem <- struct{}{}:
	case <-ctx.Done():
		leave()
		return nil, false
	}
	select {
	case sl.all <- struct{}{}:
	case <-ctx.Done():
		<-ks.sem
		leave()
		return nil, false
	}
	return func() {
		<-sl.all
		<-ks.sem
		leave()
	}, true
}
