// Package agent is bai's agent service: it owns one host's capacity and the
// kernels placed on it.
//
// An agent keeps a heartbeat (events.AgentInfo) in the agents bucket, and a
// durable pull consumer "bai-agent-<id>" on the work queue (streams.Work,
// which the NATS server fills from the session log) filtered to its one
// subject (events.AgentQueueSubject). For each placement
// (session_scheduled) it walks the kernel through PREPARING, PREPARED,
// CREATING and RUNNING, publishing each step on the log, then records the
// kernel in its bbolt state (a crash before that leaves a kernel the
// restarted agent destroys, and the placement comes again); it runs code
// in the kernel (session_execute_request, the session's own Run, a batch
// session's startup command) and streams stdout, stderr and the exit code to
// events.OutputSubject; it terminates kernels on session_terminating and
// cleans up after session_cancelled.
//
// # Runtimes
//
// Kernels are run by a Runtime. The process runtime (NewProcessRuntime) is
// the first: a kernel is a work directory under DataDir/kernels, and each
// execution a process started there with an environment allowlist; an
// image maps to a local interpreter by the longest matching name prefix.
// A shell command in a kernel finds the image's command names first on
// its PATH (python, python3 and pip for a python image; see imagebin.go).
// Docker (NewDockerRuntime) and sim runtimes implement the same interface.
//
// # The process runtime's sandbox
//
// Where the agent is root and the kernel has namespaces (SandboxOptions):
//
//   - each kernel has its own cgroup (v2 where the unified hierarchy has
//     the memory and pids controllers, else v1 memory, pids and cpu),
//     a sibling of the agent's own, with memory (and swap) = the "mem"
//     slot (default 1 GiB), a CPU quota = the "cpu" slot, and a pids limit
//     (default 512);
//   - its work directory is a tmpfs with a size limit (default 1 GiB),
//     owned by the kernel's own unprivileged uid (2^20 + a hash of the
//     kernel id);
//   - each execution starts as a helper (bai-sandbox-init next to the
//     agent's binary, else this binary re-executed; see sandboxInitEnv)
//     in new pid, mount, ipc, uts and network namespaces
//     (the network namespace has only a loopback, down, unless
//     the session asks for a network or SandboxOptions.Network); the
//     helper joins the cgroup, makes every host mount read-only in its
//     namespace, mounts a fresh /proc, an empty /home with the work
//     directory at /home/work, private /tmp and /var/tmp (tmpfs, 256 MiB
//     each) and /dev/shm (64 MiB), all gone with the execution and
//     charged to the kernel's memory limit, hides the agent's data
//     directory (unmounting the work directories under it, so that
//     /proc/self/mountinfo names no other kernel),
//     sets the host name to the kernel id, RLIMIT_CORE 0 and RLIMIT_NOFILE
//     (1024), sets no_new_privs and starts the code as the kernel's uid; it
//     stays the namespace's init (root, out of the code's reach), reaps
//     orphans, and exits with the code's status, which ends every process
//     the execution left;
//   - the agent writes into a work directory (long code as
//     .bai-run-<run id>, uploaded files) only through internal/safefs:
//     resolved beneath it without following any symlink the kernel made,
//     a new file owned by the kernel's uid;
//   - terminating a kernel kills every process of its cgroup (setsid
//     does not escape it), then removes the cgroup and the work directory;
//   - an execution that hit a limit gets "bai: oom-killed", "bai:
//     pids-limit ..." or "bai: disk-full ..." on its stderr, and a batch
//     task's failure event carries that reason (events.ReasonOOMKilled, ...).
//
// Where the agent is not root, or the kernel lacks namespaces or cgroups,
// the agent logs once at start what it cannot do, and kernels run with
// what is left (plain processes of the agent's user, in their own process
// group, with the environment allowlist). Executions running when the
// agent stops or crashes lose their output pipes: a restarted agent kills
// them and adopts the kernel (its files stay).
//
// # Output
//
// Every message on a run's output subject carries the header events.HeaderStream:
// events.StreamStdout and events.StreamStderr chunks (at most 32 KiB each, bytes
// intact, each numbered in its stream from 1 in events.HeaderChunk: the log
// may store one sent again after later ones, and readers put it back in
// order), then one events.StreamExit message whose body is the
// exit code in decimal (128+signal for a signal death), published only
// after the process exited, both pipes were drained and every chunk was
// acknowledged by the stream.
//
// # Restarts
//
// Each start bumps the agent's epoch. Kernels in the state whose runtime
// resources still exist are adopted; the others are reported terminated
// with reason agent-restarted; kernels the runtime has but the state does
// not (cgroups and work directories, or containers labelled with the
// agent's owner) are destroyed. Work handed to an agent that was killed
// before acknowledging it is handed to the next start at once. A session_scheduled for a kernel id the
// state already knows (or has terminated) never makes a second kernel.
package agent
