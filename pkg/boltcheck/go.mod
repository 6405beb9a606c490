module github.com/bai-sh/bai/pkg/boltcheck

go 1.26.0

require go.etcd.io/bbolt v1.5.0

require golang.org/x/sys v0.50.0 // indirect
