// Package agent is bai's agent service: it owns one host's capacity and the
// kernels placed on it.
//
// An agent keeps a heartbeat (events.AgentInfo) in the agents bucket, and a
// durable pull consumer "bai-agent-<id>" on the session log filtered to the
// work addressed to it (events.AgentWorkFilter). For each placement
// (session_scheduled) it writes the kernel's intent to its bbolt state
// first, then walks the kernel through PREPARING, PREPARED, CREATING and
// RUNNING, publishing each step on the log; it runs code in the kernel
// (session_execute_request, the session's own Run, a batch session's
// startup command) and streams stdout, stderr and the exit code to
// events.OutputSubject; it terminates kernels on session_terminating and
// cleans up after session_cancelled.
//
// # Runtimes
//
// Kernels are run by a Runtime. The process runtime (NewProcessRuntime) is
// the first: a kernel is a work directory under DataDir/kernels, and each
// execution a process group started there with an environment allowlist;
// an image maps to a local interpreter by the longest matching name
// prefix. Docker and sim runtimes implement the same interface.
//
// # Output
//
// Every message on a run's output subject carries the header events.HeaderStream:
// events.StreamStdout and events.StreamStderr chunks (at most 32 KiB each, in order per
// stream, bytes intact), then one events.StreamExit message whose body is the
// exit code in decimal (128+signal for a signal death), published only
// after the process exited, both pipes were drained and every chunk was
// acknowledged by the stream.
//
// # Restarts
//
// Each start bumps the agent's epoch. Kernels in the state whose runtime
// resources still exist are adopted; the others are reported terminated
// with reason agent-restarted. A session_scheduled for a kernel id the
// state already knows (or has terminated) never makes a second kernel.
package agent
