// Package e2e holds podvm's end-to-end tests: a private containerd, real
// shims and VMs, each case run under runc and podvm and compared.
package e2e
