package agent

import (
	"os"
	"strconv"
	"strings"

	agentapi "github.com/podvm/podvm/api/agent/v1"
)

// Params are the podvm.* settings the host puts on the guest kernel command
// line: the only channel that exists before the agent serves.
type Params struct {
	// Transport is "serial" (a virtio-serial port named Port) or "vsock"
	// (listening on VsockPort).
	Transport string
	Port      string
	VsockPort uint32
	Debug     bool
	// Probe makes the agent print agentapi.ProbeMarker on the console and
	// power off at once: the host's accelerator probe boots the real guest
	// this way.
	Probe bool
	// Hostname is set as the guest's hostname.
	Hostname string
	// DebugConsole lets the Debug service start shells.
	DebugConsole bool
	// SecretPort is the virtio-serial port the host writes the secret
	// every connection must present.
	SecretPort string
}

// ParseCmdline reads the podvm.* parameters out of a kernel command line.
// Unknown podvm.* keys are ignored so that a newer host can boot an older
// guest.
func ParseCmdline(cmdline string) Params {
	p := Params{Transport: "serial", Port: agentapi.SerialPortName, VsockPort: agentapi.VsockPort}
	for _, f := range strings.Fields(cmdline) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case agentapi.ParamTransport:
			p.Transport = v
		case agentapi.ParamPort:
			p.Port = v
		case agentapi.ParamVsockPort:
			if n, err := strconv.ParseUint(v, 10, 32); err == nil {
				p.VsockPort = uint32(n)
			}
		case agentapi.ParamDebug:
			p.Debug = v == "" || v == "1" || v == "true"
		case agentapi.ParamHostname:
			p.Hostname = v
		case agentapi.ParamDebugConsole:
			p.DebugConsole = v == "" || v == "1" || v == "true"
		case agentapi.ParamSecretPort:
			p.SecretPort = v
		case agentapi.ParamProbe:
			p.Probe = v == "" || v == "1" || v == "true"
		}
	}
	return p
}

func readCmdline() string {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return ""
	}
	return string(b)
}
