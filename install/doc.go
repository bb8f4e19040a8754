// Package install puts podvm onto a node: its binary and guest assets in a
// prefix, and its runtime into containerd's configuration. It is what
// `containerd-shim-podvm-v2 install` runs, on a host or from deploy/'s
// DaemonSet, and what `check` reads containerd's configuration with.
package install
