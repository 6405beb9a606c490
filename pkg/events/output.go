package events

// The header of every output message and its values. A run's output
// subject (OutputSubject) carries its stdout and stderr chunks in order,
// then one exit message whose body is the exit code in decimal (128+signal
// for a death by signal).
const (
	HeaderStream = "Bai-Stream"
	// HeaderChunk numbers a run's stdout chunks, and apart from them its
	// stderr chunks, in the order they were written, from 1. The log may
	// store a chunk after later ones (one sent again after a lost
	// acknowledgement): readers put them back in order with ChunkOrder.
	HeaderChunk = "Bai-Chunk"
	// HeaderEpoch is the epoch of the agent that published the message
	// (decimal); readers can tell output of an agent incarnation from
	// another's.
	HeaderEpoch  = "Bai-Epoch"
	StreamStdout = "stdout"
	StreamStderr = "stderr"
	StreamExit   = "exit"
)

// StartupRunID is the run id (the output subject's last token) of a batch
// session's startup command.
const StartupRunID = "startup"
