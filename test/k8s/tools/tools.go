//go:build tools

// Package tools pins the programs of the Kubernetes node test (`make
// k8s-tools`): kubelet, kube-apiserver and kubectl of k8s.io/kubernetes
// (its staging modules replaced by their tagged releases, as Kubernetes'
// own go.mod does with local paths) and etcd. It is a module of its own so
// that podvm's go.mod stays free of Kubernetes.
package tools

import (
	_ "go.etcd.io/etcd/server/v3/etcdmain"
	_ "k8s.io/kubectl/pkg/cmd"
	_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
	_ "k8s.io/kubernetes/cmd/kubelet/app"
)
