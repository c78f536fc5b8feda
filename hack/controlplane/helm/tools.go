//go:build tools

// Package tools pins the helm command this module builds, so that `go mod tidy` keeps its
// requirements; it is never compiled.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
