package sandbox

import (
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/podvm/podvm/vm"
)

// Where the guest mounts the sandbox's shared directory.
const (
	shareTag       = "podvm"
	guestShareRoot = "/run/podvm/shared"
	// guestPodShm is the pod's /dev/shm in the guest: one tmpfs that
	// every container of the pod binds, as CRI's sandbox shm is under
	// runc. The VM is the pod, so one path serves.
	guestPodShm = "/run/podvm/shm"
)

// podShmStorage is the guest tmpfs behind the pod's /dev/shm, sized as
// CRI sizes the sandbox's (64 MiB).
var podShmStorage = vm.Storage{Source: "shm", Target: guestPodShm, Type: "tmpfs", Options: []string{"mode=1777", "size=65536k"}}

// isPodShm says whether m is CRI's bind of the sandbox's /dev/shm.
func isPodShm(m specs.Mount) bool { return isBind(m) && m.Destination == "/dev/shm" }

// guestRootfs is the root filesystem, as the guest sees it, of the
// container whose directory in the share is dir.
func guestRootfs(dir string) string { return path.Join(guestShareRoot, dir, "rootfs") }

// guestMount is the guest path of the i-th host bind mount of the
// container whose directory in the share is dir.
func guestMount(dir string, i int) string {
	return path.Join(guestShareRoot, dir, "mounts", fmt.Sprint(i))
}

// translation says how the host prepared a container, for guestSpec.
type translation struct {
	id  string
	dir string // the container's directory in the share
	// binds maps the index of a spec mount to its guest source, for the
	// bind mounts the host exposed through the share.
	binds map[int]string
	// submounts are the mounts below a bind's source that the guest
	// repeats on top of it, by the same index.
	submounts map[int][]submount
	// sandboxPid is the guest PID of the pod's first container, whose
	// namespaces the pod's other containers join; 0 when there is none.
	sandboxPid uint32
}

// guestSpec translates a container's OCI spec for the guest: paths point
// into the shared directory, host-only settings (hooks, LSM labels, the
// host's network namespace) go, and namespaces the pod shares point at
// the pod's first container in the guest.
func guestSpec(in *specs.Spec, t translation) (*specs.Spec, error) {
	// A deep copy: the caller's spec stays as containerd wrote it.
	b, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, err
	}
	if s.Process == nil {
		return nil, fmt.Errorf("spec of %s has no process", t.id)
	}
	if s.Root == nil {
		s.Root = &specs.Root{}
	}
	s.Root.Path = guestRootfs(t.dir)
	// OCI hooks name host binaries; they cannot run in the guest.
	s.Hooks = nil
	s.Process.ApparmorProfile = ""
	s.Process.SelinuxLabel = ""

	var mounts []specs.Mount
	for i, m := range in.Mounts {
		m := m
		switch {
		case isPodShm(m):
			// CRI's sandbox shm is a host tmpfs; the pod's guest tmpfs
			// is the same thing on the right side of the VM boundary.
			m = podShmMount
		case isBind(m):
			src, ok := t.binds[i]
			if !ok {
				return nil, fmt.Errorf("bind mount %s of %s was not prepared", m.Destination, t.id)
			}
			m.Source = src
			// The host made the whole tree read-only already, and the
			// guest sees it as one mount: ro is the same there, and
			// keeps the create on the fast path.
			m.Options = slices.Clone(m.Options)
			for j, o := range m.Options {
				if o == "rro" {
					m.Options[j] = "ro"
				}
			}
			mounts = append(mounts, m)
			for j, sub := range t.submounts[i] {
				mounts = append(mounts, subBind(m, j, sub))
			}
			continue
		}
		mounts = append(mounts, m)
	}
	s.Mounts = mounts

	if s.Linux != nil {
		s.Linux.MountLabel = ""
		s.Linux.CgroupsPath = ""
		var nss []specs.LinuxNamespace
		for _, ns := range s.Linux.Namespaces {
			switch {
			case ns.Type == specs.NetworkNamespace:
				// The VM is the pod's network namespace: every container
				// uses the guest's, which holds the pod's interfaces.
				continue
			case ns.Path == "":
			case t.sandboxPid != 0 && slices.Contains([]specs.LinuxNamespaceType{specs.PIDNamespace, specs.IPCNamespace, specs.UTSNamespace}, ns.Type):
				ns.Path = fmt.Sprintf("/proc/%d/ns/%s", t.sandboxPid, nsFile(ns.Type))
			default:
				// A host namespace path means nothing in the guest; the
				// container gets a namespace of its own there.
				ns.Path = ""
			}
			nss = append(nss, ns)
		}
		s.Linux.Namespaces = nss
	}
	return &s, nil
}

// subBind mounts the j-th submount of a bind's source (exposed beside the
// bind in the share) on top of the bind in the guest, with its own
// read-only flag and the bind's propagation.
func subBind(m specs.Mount, j int, sub submount) specs.Mount {
	opts := []string{"rbind", "rw"}
	if sub.readonly {
		opts[1] = "ro"
	}
	for _, o := range m.Options {
		switch o {
		case "private", "rprivate", "slave", "rslave", "unbindable", "runbindable":
			opts = append(opts, o)
		}
	}
	return specs.Mount{
		Destination: path.Join(m.Destination, sub.rel),
		Type:        "bind",
		Source:      fmt.Sprintf("%s.%d", m.Source, j),
		Options:     opts,
	}
}

// isCRISandbox says whether spec is a CRI pod's sandbox (its pause
// container, or the Sandbox API's pod spec).
func isCRISandbox(spec *specs.Spec) bool {
	return spec.Annotations[AnnotationContainerType] == "sandbox"
}

func isBind(m specs.Mount) bool {
	if m.Type == "bind" {
		return true
	}
	return slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind")
}

// nsFile is the /proc/PID/ns entry of a namespace type.
func nsFile(t specs.LinuxNamespaceType) string {
	switch t {
	case specs.PIDNamespace:
		return "pid"
	case specs.IPCNamespace:
		return "ipc"
	case specs.UTSNamespace:
		return "uts"
	case specs.NetworkNamespace:
		return "net"
	case specs.MountNamespace:
		return "mnt"
	case specs.UserNamespace:
		return "user"
	case specs.CgroupNamespace:
		return "cgroup"
	}
	return strings.ToLower(string(t))
}
