package sandbox

import (
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/identifiers"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Everything a request carries is checked before it names a path, a
// network namespace or a QEMU option: IDs follow containerd's identifier
// rules (letters, digits and [._-], at most 76 characters), specs must
// have what podvm needs, and mounts are binds or a short list of kernel
// filesystems. Each error names the value and what to do.

// checkID accepts a container, exec or sandbox ID as containerd would.
func CheckID(kind, id string) error {
	if err := identifiers.Validate(id); err != nil {
		return fmt.Errorf("invalid %s %q: use letters, digits, '.', '_' and '-' (at most 76 characters): %w",
			kind, truncate(id, 100), errdefs.ErrInvalidArgument)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// guestMountTypes are the non-bind mounts a spec may ask the guest for:
// what runc's default specs and CRI use. Anything else (9p, virtiofs, a
// block device's filesystem) could reach the VM's own devices and shares.
var guestMountTypes = []string{"proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2"}

// checkSpec accepts a container's spec: it has a process with arguments
// and a root (or containerd's rootfs mounts), and allowed mounts.
func checkSpec(id string, s *specs.Spec, rootfsMounts int) error {
	if s.Process == nil {
		return fmt.Errorf("the spec of %s has no process: %w", id, errdefs.ErrInvalidArgument)
	}
	if len(s.Process.Args) == 0 && s.Process.CommandLine == "" {
		return fmt.Errorf("the spec of %s has a process without args: %w", id, errdefs.ErrInvalidArgument)
	}
	if rootfsMounts == 0 && (s.Root == nil || s.Root.Path == "") {
		return fmt.Errorf("the spec of %s has no root and containerd gave no rootfs mounts: %w", id, errdefs.ErrInvalidArgument)
	}
	for _, m := range s.Mounts {
		if err := checkMount(id, m); err != nil {
			return err
		}
	}
	if s.Linux != nil {
		if _, _, err := splitSysctls(id, s.Linux.Sysctl); err != nil {
			return err
		}
	}
	return nil
}

func checkMount(id string, m specs.Mount) error {
	if !path.IsAbs(m.Destination) {
		return fmt.Errorf("mount destination %q of %s is not an absolute path: %w", truncate(m.Destination, 100), id, errdefs.ErrInvalidArgument)
	}
	if isBind(m) {
		if !path.IsAbs(m.Source) {
			return fmt.Errorf("bind mount source %q for %s of %s is not an absolute path: %w", truncate(m.Source, 100), m.Destination, id, errdefs.ErrInvalidArgument)
		}
		if slices.Contains(m.Options, "shared") || slices.Contains(m.Options, "rshared") {
			return fmt.Errorf("bind mount of %s at %s of %s asks for shared propagation (Kubernetes' Bidirectional): mounts made inside a VM cannot reach the host; use rslave (HostToContainer), which brings the host's mounts in: %w",
				truncate(m.Source, 100), truncate(m.Destination, 100), id, errdefs.ErrInvalidArgument)
		}
		return nil
	}
	if !slices.Contains(guestMountTypes, m.Type) {
		return fmt.Errorf("mount of type %q at %s of %s is not allowed in a VM: use a bind mount of a host path, or one of %s: %w",
			truncate(m.Type, 40), m.Destination, id, strings.Join(guestMountTypes, ", "), errdefs.ErrInvalidArgument)
	}
	return nil
}

// checkExecProcess accepts an exec's OCI process (JSON) with arguments.
func checkExecProcess(execID string, b []byte) error {
	var p specs.Process
	if err := json.Unmarshal(b, &p); err != nil {
		return fmt.Errorf("the process of exec %s is not an OCI process: %v: %w", execID, err, errdefs.ErrInvalidArgument)
	}
	if len(p.Args) == 0 {
		return fmt.Errorf("the process of exec %s has no args: %w", execID, errdefs.ErrInvalidArgument)
	}
	return nil
}
