#include "textflag.h"

// func rawVfork(flags uintptr) (pid uintptr, errno uintptr)
//
// clone(flags) where flags holds CLONE_VM|CLONE_VFORK: the child runs on
// this stack, in this memory, until it executes or exits, while the
// parent waits in the system call. The return address is kept in a
// register across it: the child, returning first and calling on, writes
// over the stack slot it was in.
TEXT ·rawVfork(SB),NOSPLIT|NOFRAME,$0-24
	MOVQ	flags+0(FP), DI
	MOVQ	$0, SI
	MOVQ	$0, DX
	MOVQ	$0, R10
	MOVQ	$0, R8
	MOVQ	$0, R9
	MOVQ	$56, AX // SYS_clone
	POPQ	R12
	SYSCALL
	PUSHQ	R12
	CMPQ	AX, $0xfffffffffffff001
	JLS	ok
	MOVQ	$0, pid+8(FP)
	NEGQ	AX
	MOVQ	AX, errno+16(FP)
	RET
ok:
	MOVQ	AX, pid+8(FP)
	MOVQ	$0, errno+16(FP)
	RET

// func rawCloneOn(flags, stack, ptid uintptr) (pid uintptr, errno uintptr)
//
// clone(flags) with CLONE_VM and without CLONE_VFORK: the child starts
// on stack, where its caller put three words, p, x and fn, and calls fn(p,
// x) as Go's register ABI does (fn: an ABIInternal entry, nosplit and
// norace, which never returns); the parent returns at once. With
// CLONE_PIDFD the kernel writes the child's pidfd at ptid.
TEXT ·rawCloneOn(SB),NOSPLIT|NOFRAME,$0-40
	MOVQ	flags+0(FP), DI
	MOVQ	stack+8(FP), SI
	MOVQ	ptid+16(FP), DX
	MOVQ	$0, R10
	MOVQ	$0, R8
	MOVQ	$0, R9
	MOVQ	$56, AX // SYS_clone
	SYSCALL
	CMPQ	AX, $0
	JEQ	child
	CMPQ	AX, $0xfffffffffffff001
	JLS	ok
	MOVQ	$0, pid+24(FP)
	NEGQ	AX
	MOVQ	AX, errno+32(FP)
	RET
ok:
	MOVQ	AX, pid+24(FP)
	MOVQ	$0, errno+32(FP)
	RET
child:
	// The two words above the return address are fn's spill slots.
	MOVQ	0(SP), AX
	MOVQ	8(SP), BX
	MOVQ	16(SP), DX
	XORPS	X15, X15
	CALL	DX
	MOVQ	$127, DI
	MOVQ	$60, AX // SYS_exit
	SYSCALL
	RET
