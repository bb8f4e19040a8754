package agentapi

import (
	"encoding/binary"
	"fmt"
)

// The host configures the agent through the guest kernel's command line,
// the only channel that exists before the agent serves. These names are part
// of the protocol, like the messages.
const (
	// ParamTransport is "serial" or "vsock".
	ParamTransport = "podvm.transport"
	// ParamPort names the virtio-serial port the agent serves on.
	ParamPort = "podvm.port"
	// ParamVsockPort is the vsock port the agent listens on.
	ParamVsockPort = "podvm.vsock_port"
	// ParamDebug makes the agent log verbosely to the console.
	ParamDebug = "podvm.debug"
	// ParamDebugConsole lets the agent serve the debug console.
	ParamDebugConsole = "podvm.debug_console"
	// ParamProbe makes the agent print ProbeMarker and power off at once.
	ParamProbe = "podvm.probe"
	// ParamHostname is the guest's hostname: the host's, which is what a
	// container without a hostname of its own sees under runc.
	ParamHostname = "podvm.hostname"
	// ParamSecretPort names the virtio-serial port the host writes the
	// agent's secret to (SecretSize bytes), which the agent reads once at
	// boot. The secret itself never appears on the command line, which
	// every process in the guest can read in /proc/cmdline.
	ParamSecretPort = "podvm.secret_port"
)

// Every connection to the agent starts with the host's hello: Hello, then
// the secret. The agent serves ttrpc on a connection only after a hello
// with the right secret (and, over vsock, only from the host, CID 2).
const (
	Hello          = "podvm-hello-v1\n"
	SecretSize     = 32
	SecretPortName = "podvm.secret"
)

const (
	// SerialPortName is the default name of the agent's virtio-serial port.
	SerialPortName = "podvm.agent"
	// VsockPort is the default vsock port of the agent.
	VsockPort = 1024
	// ProbeMarker is the console line a probe boot prints once the agent
	// runs: proof that the accelerator ran a real guest to user space.
	ProbeMarker = "podvm-agent: probe ok"
)

// DebugConsoleID is the container ID the Stdio service knows debug
// consoles by: not a valid container ID, so no container can take it.
const DebugConsoleID = "~debug-console"

// The host hands the agent its identity over the secret port as one record
// of BootRecordSize bytes: the secret, fresh entropy for the guest's CRNG,
// and the host's wall clock (nanoseconds since the epoch, little endian).
// A VM restored from a template holds the template's CRNG state and clock
// until it reads the record; the agent reseeds and steps the clock before
// it serves anything. Once the agent waits for the record it writes
// ReadyByte on the port: that is when a template VM may be saved.
const (
	EntropySize    = 32
	BootRecordSize = SecretSize + EntropySize + 8
	ReadyByte      = 'R'
)

// BootRecord is what the host writes on the secret port.
type BootRecord struct {
	Secret     []byte
	Entropy    []byte
	RealtimeNs int64
}

// Marshal lays the record out as the agent reads it.
func (r BootRecord) Marshal() []byte {
	b := make([]byte, 0, BootRecordSize)
	b = append(b, r.Secret...)
	b = append(b, r.Entropy...)
	return binary.LittleEndian.AppendUint64(b, uint64(r.RealtimeNs))
}

// ParseBootRecord reads a record written by Marshal.
func ParseBootRecord(b []byte) (BootRecord, error) {
	if len(b) != BootRecordSize {
		return BootRecord{}, fmt.Errorf("boot record of %d bytes, want %d", len(b), BootRecordSize)
	}
	return BootRecord{
		Secret:     b[:SecretSize],
		Entropy:    b[SecretSize : SecretSize+EntropySize],
		RealtimeNs: int64(binary.LittleEndian.Uint64(b[SecretSize+EntropySize:])),
	}, nil
}
