//go:build tools

// Package tools pins helm, which builds from this module for the chart checks (chart/tests/run.sh).
// Test and release tooling only: not part of vdbi.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
