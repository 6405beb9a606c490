// Package hugeheap backs the start of the bai process's Go heap with one
// transparent huge page, as the first thing its init does.
//
// A command of bai lives for a few milliseconds and touches a few hundred
// fresh heap pages in that time, each one page fault. On virtual machines
// with costly page faults (shadow page tables: 10–15 µs a fault, and 5 µs
// more for the first touch of a page even after it is mapped) those
// faults are most of the start-up. One MADV_COLLAPSE of the 2 MiB block
// the heap starts in (about 0.3 ms) replaces them; the heap's next block,
// when it is part of the same mapping, is marked MADV_HUGEPAGE so that
// its first fault maps a huge page too.
//
// Importing the package is all there is to it: it imports nothing but
// syscall and unsafe, so that its init runs among the first. It changes
// nothing but where the heap's pages come from: where the kernel has no
// MADV_COLLAPSE (before Linux 6.1), transparent huge pages are off, or no
// huge page is free, the calls fail and the heap stays on small pages.
// BAI_HUGEPAGE=0 in the environment turns it off.
package hugeheap
