module github.com/bai-sh/bai/tools/bai

go 1.26.0

require (
	github.com/bai-sh/bai/pkg/events v0.0.0
	github.com/bai-sh/bai/pkg/slots v0.0.0
	github.com/nats-io/nats.go v1.55.0
	github.com/urfave/cli/v2 v2.27.7
	golang.org/x/term v0.48.0
)

require (
	github.com/cpuguy83/go-md2man/v2 v2.0.7 // indirect
	github.com/klauspost/compress v1.20.4 // indirect
	github.com/nats-io/nkeys v0.4.17 // indirect
	github.com/nats-io/nuid v1.0.1 // indirect
	github.com/russross/blackfriday/v2 v2.1.0 // indirect
	github.com/xrash/smetrics v0.0.0-20240521201337-686a1a2994c1 // indirect
	golang.org/x/crypto v0.58.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
)

replace (
	github.com/bai-sh/bai/pkg/events => ../../pkg/events
	github.com/bai-sh/bai/pkg/slots => ../../pkg/slots
)
