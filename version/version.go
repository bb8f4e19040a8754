// Package version holds the build identity that podvm's binaries (shim and
// guest agent) report; `make` sets it from git describe.
package version

// Version is overwritten at link time with
// -ldflags "-X github.com/podvm/podvm/version.Version=...".
var Version = "dev"

// APIVersion is the host-guest protocol version the binaries speak.
const APIVersion = "v1"
