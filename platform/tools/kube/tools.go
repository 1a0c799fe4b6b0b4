//go:build tools

// Package tools pins the upstream commands the local platform builds:
// kube-apiserver, kube-controller-manager, kube-scheduler and kubelet from k8s.io/kubernetes and etcd from go.etcd.io/etcd/server/v3.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
