//go:build tools

// Package tools pins promtool, which builds from this module to unit-test the alerting rules
// (chart/alerts/tests, run by chart/tests/run.sh). Test tooling only: not part of vdbi.
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
