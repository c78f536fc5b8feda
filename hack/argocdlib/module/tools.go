//go:build tools

// Package tools pins the argocd command this module builds, so that `go mod tidy` keeps its
// requirements; it is never compiled.
package tools

import (
	_ "github.com/argoproj/argo-cd/v3/cmd"
)
