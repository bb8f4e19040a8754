package agent

import "testing"

func TestParseCmdline(t *testing.T) {
	tests := []struct {
		cmdline string
		want    Params
	}{
		{"console=hvc0 quiet", Params{Transport: "serial", Port: "podvm.agent", VsockPort: 1024}},
		{"quiet podvm.transport=vsock podvm.vsock_port=2048 podvm.debug=1\n", Params{Transport: "vsock", Port: "podvm.agent", VsockPort: 2048, Debug: true}},
		{"podvm.port=other podvm.probe", Params{Transport: "serial", Port: "other", VsockPort: 1024, Probe: true}},
		{"podvm.vsock_port=notanumber podvm.debug=0 podvm.future=x", Params{Transport: "serial", Port: "podvm.agent", VsockPort: 1024}},
	}
	for _, tt := range tests {
		if got := ParseCmdline(tt.cmdline); got != tt.want {
			t.Errorf("ParseCmdline(%q) = %+v, want %+v", tt.cmdline, got, tt.want)
		}
	}
}
