//go:build linux && (amd64 || arm64)

package hugeheap

import (
	"syscall"
	"unsafe"
)

const (
	hugePage = 2 << 20
	// heapChunk is the Go runtime's unit of heap mapping (its palloc
	// chunk): the chunk the heap starts in is mapped read-write whole.
	heapChunk = 4 << 20

	madvHugePage = 14 // MADV_HUGEPAGE, the same on every Linux architecture
	madvCollapse = 25 // MADV_COLLAPSE (Linux 6.1)
)

// state is what init did, for the tests.
var state struct {
	block    uintptr // the 2 MiB block collapsed (0: none tried)
	off      bool    // BAI_HUGEPAGE=0
	advise   syscall.Errno
	collapse syscall.Errno
}

// probe is the heap object whose address says where the heap is.
var probe *[16]byte

func init() {
	if v, _ := syscall.Getenv("BAI_HUGEPAGE"); v == "0" {
		state.off = true
		return
	}
	probe = new([16]byte)
	p := uintptr(unsafe.Pointer(probe))
	block := p &^ (hugePage - 1)
	chunkEnd := p&^(heapChunk-1) + heapChunk
	state.block = block
	// The rest of the chunk first: a block in it not faulted yet gets a
	// huge page at its first fault, with no collapse.
	_, _, state.advise = syscall.Syscall(syscall.SYS_MADVISE, block, chunkEnd-block, madvHugePage)
	// The block the heap starts in has small pages already (the
	// runtime's and the first inits' allocations): collapsed, they are
	// copied into one huge page.
	_, _, state.collapse = syscall.Syscall(syscall.SYS_MADVISE, block, hugePage, madvCollapse)
}
