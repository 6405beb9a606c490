package events

// The header of every output message and its values. A run's output
// subject (OutputSubject) carries its stdout and stderr chunks in order,
// then one exit message whose body is the exit code in decimal (128+signal
// for a death by signal).
const (
	HeaderStream = "Bai-Stream"
	StreamStdout = "stdout"
	StreamStderr = "stderr"
	StreamExit   = "exit"
)

// StartupRunID is the run id (the output subject's last token) of a batch
// session's startup command.
const StartupRunID = "startup"
