package sandbox

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/podvm/podvm/vm"
)

// A pod the Sandbox API starts has no pause container, yet its containers
// share IPC and UTS namespaces (and with shareProcessNamespace a PID
// namespace, whose PID 1 must reap). The infra process holds them: the
// guest agent's own binary, bind-mounted read-only into an empty tmpfs
// root, which as /pause does what Kubernetes' pause does
// (cmd/podvm-agent/pause.c).
// It runs in the guest as the container named after the sandbox, which
// CRI never uses for a container of a pod it started this way.

const (
	guestInfraRoot = "/run/podvm/infra"
	// infraBinary is where the agent's binary (/init in the guest) is in
	// the infra root; its name makes the agent act as pause
	// (agent.PauseName).
	infraBinary = "/pause"
	// infraUser is the pause image's user.
	infraUser = 65535
)

var infraStorage = vm.Storage{Source: "infra", Target: guestInfraRoot, Type: "tmpfs", Options: []string{"mode=0755", "size=64k"}}

// infraSpec is the guest spec of the pod's infra process: new namespaces
// (but the guest's network, which is the pod's), the pod's hostname and
// its IPC sysctls, no capabilities.
func infraSpec(pc *PodConfig, sysctls map[string]string) *specs.Spec {
	return &specs.Spec{
		Version:  specs.Version,
		Hostname: pc.Hostname,
		Root:     &specs.Root{Path: guestInfraRoot, Readonly: true},
		Process: &specs.Process{
			Args:            []string{infraBinary},
			Cwd:             "/",
			Env:             []string{"PATH=/"},
			User:            specs.User{UID: infraUser, GID: infraUser},
			NoNewPrivileges: true,
			Capabilities:    &specs.LinuxCapabilities{},
			OOMScoreAdj:     intPtr(-998),
		},
		Mounts: []specs.Mount{{Destination: infraBinary, Type: "bind", Source: "/init", Options: []string{"rbind", "ro", "nosuid", "nodev"}}},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.MountNamespace}, {Type: specs.PIDNamespace},
				{Type: specs.IPCNamespace}, {Type: specs.UTSNamespace},
			},
			Sysctl: sysctls,
		},
	}
}

func intPtr(i int) *int { return &i }

// startInfra creates and starts the pod's infra process and returns its
// guest PID.
func (sb *Pod) startInfra(ctx context.Context, g *vm.Guest, pc *PodConfig, sysctls map[string]string) (uint32, error) {
	b, err := json.Marshal(infraSpec(pc, sysctls))
	if err != nil {
		return 0, err
	}
	if _, err := g.CreateContainer(ctx, vm.Container{ID: sb.id, Spec: b, Storages: []vm.Storage{infraStorage}}); err != nil {
		return 0, fmt.Errorf("the pod's infra process: %w", err)
	}
	pid, err := g.StartProcess(ctx, sb.id, "")
	if err != nil {
		return 0, fmt.Errorf("start the pod's infra process: %w", err)
	}
	go sb.watchInfra(g)
	return pid, nil
}

// watchInfra ends the pod when its infra process exits (a guest that
// kills it has broken the pod's namespaces), as runc's pod ends with its
// pause container.
func (sb *Pod) watchInfra(g *vm.Guest) {
	exit, err := g.Wait(sb.ctx, sb.id, "")
	if err != nil {
		// The VM is gone or stopping: watchVM and Stop report it.
		return
	}
	log.G(sb.ctx).WithField("status", exit.Status).Error("the pod's infra process exited; the pod has ended")
	sb.end(exit.Status)
}
