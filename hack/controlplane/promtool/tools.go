//go:build tools

// Package tools pins promtool, which this module builds, so that `go mod tidy` keeps its
// requirements; it is never compiled.
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
