//go:build tools

// Package tools pins the upstream commands the local node builds: containerd, containerd-shim-runc-v2 and ctr from
// github.com/containerd/containerd/v2 (NRI is built in and on by default in 2.x).
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
