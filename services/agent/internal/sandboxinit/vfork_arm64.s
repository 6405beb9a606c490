#include "textflag.h"

// func rawVfork(flags uintptr) (pid uintptr, errno uintptr)
//
// clone(flags) where flags holds CLONE_VM|CLONE_VFORK: the child runs on
// this stack, in this memory, until it executes or exits, while the
// parent waits in the system call. The return address is in the link
// register, each task's own.
TEXT ·rawVfork(SB),NOSPLIT|NOFRAME,$0-24
	MOVD	flags+0(FP), R0
	MOVD	$0, R1
	MOVD	$0, R2
	MOVD	$0, R3
	MOVD	$0, R4
	MOVD	$0, R5
	MOVD	$220, R8 // SYS_clone
	SVC
	CMN	$4095, R0
	BCC	ok
	MOVD	$0, R1
	MOVD	R1, pid+8(FP)
	NEG	R0, R0
	MOVD	R0, errno+16(FP)
	RET
ok:
	MOVD	R0, pid+8(FP)
	MOVD	ZR, errno+16(FP)
	RET

// func rawCloneOn(flags, stack, ptid uintptr) (pid uintptr, errno uintptr)
//
// clone(flags) with CLONE_VM and without CLONE_VFORK: the child starts
// on stack, where its caller put three words, p, x and fn, and calls fn(p,
// x) as Go's register ABI does (fn: an ABIInternal entry, nosplit and
// norace, which never returns); the parent returns at once. With
// CLONE_PIDFD the kernel writes the child's pidfd at ptid.
TEXT ·rawCloneOn(SB),NOSPLIT|NOFRAME,$0-40
	MOVD	flags+0(FP), R0
	MOVD	stack+8(FP), R1
	MOVD	ptid+16(FP), R2
	MOVD	$0, R3
	MOVD	$0, R4
	MOVD	$220, R8 // SYS_clone
	SVC
	CMP	ZR, R0
	BEQ	child
	CMN	$4095, R0
	BCC	ok
	MOVD	$0, R1
	MOVD	R1, pid+24(FP)
	NEG	R0, R0
	MOVD	R0, errno+32(FP)
	RET
ok:
	MOVD	R0, pid+24(FP)
	MOVD	ZR, errno+32(FP)
	RET
child:
	MOVD	0(RSP), R0
	MOVD	8(RSP), R1
	MOVD	16(RSP), R2
	SUB	$32, RSP
	CALL	(R2)
	MOVD	$127, R0
	MOVD	$93, R8 // SYS_exit
	SVC
	RET
