module github.com/bai-sh/bai/pkg/slots

go 1.26
