package sandbox

import (
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// A pod the Sandbox API starts has no pause container, and CRI leaves its
// /etc/hostname, /etc/hosts, /etc/resolv.conf and /dev/shm to the sandbox:
// podvm writes the files into the share before the VM boots (so nothing
// the guest does can steer the writes), and each container binds them, as
// CRI binds a pause container's.

// podFilesDir is the pod's files in the share; no container ID starts
// with a dot.
const podFilesDir = ".pod"

// etcHosts is what CRI writes for a pod that is not on the node's network.
const etcHosts = `127.0.0.1	localhost
::1	localhost ip6-localhost ip6-loopback
fe00::0	ip6-localnet
ff00::0	ip6-mcastprefix
ff02::1	ip6-allnodes
ff02::2	ip6-allrouters
`

// maxResolvConf bounds the node's resolv.conf a pod copies.
const maxResolvConf = 64 << 10

// podFiles are the contents of the pod's files, by their path in a
// container.
func (pc *PodConfig) podFiles() (map[string]string, error) {
	resolv, err := pc.resolvConf()
	if err != nil {
		return nil, err
	}
	files := map[string]string{"/etc/hosts": etcHosts, "/etc/resolv.conf": resolv}
	if pc.Hostname != "" {
		files["/etc/hostname"] = pc.Hostname + "\n"
	}
	return files, nil
}

// resolvConf is the pod's DNS configuration as CRI writes it, or the
// node's resolv.conf when the pod has none.
func (pc *PodConfig) resolvConf() (string, error) {
	d := pc.DNS
	if len(d.Servers)+len(d.Searches)+len(d.Options) == 0 {
		f, err := os.Open("/etc/resolv.conf")
		if os.IsNotExist(err) {
			return "", nil
		}
		if err != nil {
			return "", fmt.Errorf("the node's resolv.conf: %w", err)
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, maxResolvConf))
		return string(b), err
	}
	var b strings.Builder
	if len(d.Searches) > 0 {
		b.WriteString("search " + strings.Join(d.Searches, " ") + "\n")
	}
	for _, s := range d.Servers {
		b.WriteString("nameserver " + s + "\n")
	}
	if len(d.Options) > 0 {
		b.WriteString("options " + strings.Join(d.Options, " ") + "\n")
	}
	return b.String(), nil
}

// writePodFiles writes the pod's files into the share, which the guest
// cannot reach yet.
func (sb *Pod) writePodFiles(files map[string]string) error {
	dir := filepath.Join(sb.shareDir, podFilesDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("the pod's files: %w", err)
	}
	for p, content := range files {
		if err := os.WriteFile(filepath.Join(dir, path.Base(p)), []byte(content), 0o644); err != nil {
			return fmt.Errorf("the pod's %s: %w", p, err)
		}
	}
	return nil
}

// podShmMount is a container's bind of the pod's /dev/shm in the guest.
var podShmMount = specs.Mount{Destination: "/dev/shm", Type: "bind", Source: guestPodShm,
	Options: []string{"rbind", "nosuid", "noexec", "nodev"}}

// withPodFiles binds the pod's files into a guest spec where the container
// has none of its own, and the pod's /dev/shm in place of the private tmpfs
// of containerd's default spec (the containers of a pod share one, as
// under runc), and reports whether it uses the pod's /dev/shm.
func withPodFiles(s *specs.Spec, files []string) (podShm bool) {
	has := map[string]bool{}
	for i, m := range s.Mounts {
		has[path.Clean(m.Destination)] = true
		if path.Clean(m.Destination) != "/dev/shm" {
			continue
		}
		if m.Type == "tmpfs" {
			s.Mounts[i] = podShmMount
		}
		podShm = podShm || s.Mounts[i].Source == guestPodShm
	}
	ro := s.Root != nil && s.Root.Readonly
	for _, p := range files {
		if has[p] {
			continue
		}
		opts := []string{"rbind", "nosuid", "nodev", "noexec"}
		if ro {
			opts = append(opts, "ro")
		}
		s.Mounts = append(s.Mounts, specs.Mount{Destination: p, Type: "bind",
			Source: path.Join(guestShareRoot, podFilesDir, path.Base(p)), Options: opts})
	}
	if !has["/dev/shm"] {
		s.Mounts = append(s.Mounts, podShmMount)
		podShm = true
	}
	return podShm
}
