//go:build tools

// Package tools pins the upstream commands the e2e suite builds: kube-apiserver, kube-scheduler,
// kube-controller-manager and kubectl from k8s.io/kubernetes, and etcd at the version it pins.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
