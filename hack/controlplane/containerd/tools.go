//go:build tools

// Package tools pins the containerd commands this module builds, so that `go mod tidy` keeps
// their requirements; it is never compiled.
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
