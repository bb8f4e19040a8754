package hypervisor

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
)

// fingerprintVersion changes when what a template holds changes in a way
// its inputs do not show (the save format, the agent's boot protocol).
const fingerprintVersion = "podvm-template-1"

// TemplateMAC is the MAC of a template's i-th NIC. Every VM restored from
// the template starts with it; the agent then gives the NIC the pod's.
func TemplateMAC(i int) net.HardwareAddr {
	// Locally administered, unicast: 02:"pod":00:i.
	return net.HardwareAddr{0x02, 'p', 'o', 'd', 0, byte(i)}
}

// TemplateNICs are nics as a VM of their template has them: each with its
// template MAC, its MTU and its TAP file kept.
func TemplateNICs(nics []NIC) []NIC {
	out := make([]NIC, len(nics))
	for i, n := range nics {
		out[i] = NIC{MAC: TemplateMAC(i), File: n.File, MTU: n.MTU}
	}
	return out
}

// withoutTAPs is nics with no TAP files: a template's, or a fingerprint's.
func withoutTAPs(nics []NIC) []NIC {
	out := TemplateNICs(nics)
	for i := range out {
		out[i].File = nil
	}
	return out
}

// TemplateShape is c as its template is built: no network namespace, NICs
// with template MACs and no TAPs.
func TemplateShape(c Config) Config {
	c.NetNS = ""
	c.NICs = withoutTAPs(c.NICs)
	return c
}

// Fingerprint identifies what a VM template built from c depends on: QEMU's
// command line for c with the per-VM details left out (name, network
// namespace, TAP files, MACs, share paths), and the identity (size,
// modification time, inode) of the QEMU binary, the kernel and the
// initramfs. A VM can be restored from a template only if both match, so a
// changed input means a new template.
func Fingerprint(c Config) (string, error) {
	c.ID = "template"
	c.NetNS = ""
	c.Console = nil
	c.listenPorts = nil
	c.Memory = &MemoryFile{Path: "/memory"}
	c.Incoming = false
	c.NICs = withoutTAPs(c.NICs)
	c.Shares = append([]Share(nil), c.Shares...)
	for i := range c.Shares {
		c.Shares[i].Path = "/share"
	}
	f := fds{qmp: 3, console: 4}
	for i := range c.Ports {
		f.ports = append(f.ports, 5+i)
	}
	a, err := args(&c, f)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n", fingerprintVersion, strings.Join(a, "\x00"))
	qemu, err := exec.LookPath(c.QEMU)
	if err != nil {
		return "", fmt.Errorf("QEMU binary %s: %w", c.QEMU, err)
	}
	for _, p := range []string{qemu, c.Kernel, c.Initramfs} {
		id, err := fileIdentity(p)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s\n", id)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// fileIdentity names a file's current contents without reading them.
func fileIdentity(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	sys, _ := st.Sys().(*syscall.Stat_t)
	var ino uint64
	if sys != nil {
		ino = sys.Ino
	}
	return fmt.Sprintf("%s size=%d mtime=%d ino=%d", path, st.Size(), st.ModTime().UnixNano(), ino), nil
}
