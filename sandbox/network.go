package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/podvm/podvm/hypervisor"
	"github.com/podvm/podvm/network"
	"github.com/podvm/podvm/vm"
	"github.com/podvm/podvm/vmconfig"
)

// State files of the sandbox's network, in its directory: what `delete`
// needs to undo after a crash.
const (
	netnsState   = "netns.json"
	networkState = "network.json"
)

// podNetwork prepares the pod's network before the VM boots: the network
// namespace QEMU will run in and the NICs it gets. A spec that names a
// namespace (CRI's) is used as it is; one that asks for a new namespace
// gets a persistent one podvm owns (and removes with the sandbox); one
// without a network namespace shares the host's, and the guest gets no NIC
// (`ctr run --net-host`). A CRI pod on the node's network is refused: its
// VM would have none, where Kubernetes expects the node's.
func (sb *Pod) podNetwork(ctx context.Context, cfg *vmconfig.Config, spec *specs.Spec) (netns string, nics []hypervisor.NIC, err error) {
	var nsSpec *specs.LinuxNamespace
	if spec.Linux != nil {
		for i, ns := range spec.Linux.Namespaces {
			if ns.Type == specs.NetworkNamespace {
				nsSpec = &spec.Linux.Namespaces[i]
			}
		}
	}
	if nsSpec == nil {
		if isCRISandbox(spec) {
			return "", nil, fmt.Errorf("pod %s asks for the node's network (hostNetwork: true): a pod in its own VM cannot share the node's network namespace; run it without hostNetwork, or with a runc RuntimeClass: %w", sb.id, errdefs.ErrInvalidArgument)
		}
		log.G(ctx).Warn("the spec shares the host's network namespace: the VM gets no network interface")
		return "", nil, nil
	}
	ns := &network.Namespace{Path: nsSpec.Path}
	if ns.Path == "" {
		// Recorded before it exists: a shim that dies in between still
		// leaves a record `delete` acts on (removing what is not there is
		// no error).
		name := "podvm-" + sb.id
		state := filepath.Join(sb.dir, netnsState)
		if err := network.SaveNS(state, &network.Namespace{Path: filepath.Join(network.NetNSDir, name), Owned: true}); err != nil {
			return "", nil, err
		}
		if ns, err = network.CreateNS(name); err != nil {
			// Not ours to remove (it may be somebody else's): only the
			// record goes.
			_ = os.Remove(state)
			return "", nil, err
		}
	}
	sb.netMu.Lock()
	defer sb.netMu.Unlock()
	sb.pod, err = network.OpenPod(ns.Path, network.Model(cfg.Network.Model), filepath.Join(sb.dir, networkState))
	if err != nil {
		return "", nil, err
	}
	eps, err := sb.pod.Attach()
	if err != nil {
		return "", nil, err
	}
	if ns.Owned && len(eps) == 0 && !hypervisor.MachineHotplugs(cfg.Hypervisor.Machine) {
		// `ctr run --cni` adds the interface after the task exists. q35
		// plugs a NIC in then; a microvm cannot, so it boots with a spare
		// NIC that Start joins to the interface.
		if _, err := sb.pod.Spare(); err != nil {
			log.G(ctx).WithError(err).Warn("no spare NIC: an interface added after the VM started will not reach it")
		}
	}
	for _, e := range sb.pod.Endpoints() {
		mac := e.Interface.HardwareAddr
		if e.BootMAC != nil {
			mac = e.BootMAC
		}
		nics = append(nics, hypervisor.NIC{MAC: mac, File: e.File, MTU: e.Interface.MTU})
	}
	return ns.Path, nics, nil
}

// configureGuestNetwork gives the guest the pod interfaces joined so far.
func (sb *Pod) configureGuestNetwork(ctx context.Context, g *vm.Guest) error {
	sb.netMu.Lock()
	pod := sb.pod
	var ifaces []network.Interface
	var routes []network.Route
	var neighs []network.Neighbour
	if pod != nil {
		ifaces, routes, neighs = pod.Guest()
	}
	sb.netMu.Unlock()
	if len(ifaces) == 0 {
		return nil
	}
	return g.ConfigureNetwork(ctx, ifaces, routes, neighs)
}

// rescanNetwork joins interfaces that appeared in the pod's namespace since
// the VM booted (CNI run by `ctr run --cni` between Create and Start) and
// configures them in the guest.
func (sb *Pod) rescanNetwork(ctx context.Context, g *vm.Guest) error {
	sb.netMu.Lock()
	var added []*network.Endpoint
	var err error
	if sb.pod != nil {
		added, err = sb.pod.Attach()
	}
	sb.netMu.Unlock()
	if err != nil || len(added) == 0 {
		return err
	}
	for _, e := range added {
		switch {
		case e.BootMAC != nil:
			// An adopted spare: QEMU has its TAP since boot.
		case g.VM.CanHotplug():
			if err := g.VM.AddNIC(ctx, hypervisor.NIC{MAC: e.Interface.HardwareAddr, File: e.File, MTU: e.Interface.MTU}); err != nil {
				return fmt.Errorf("hot-plug a NIC for %s: %w", e.Interface.Name, err)
			}
		default:
			log.G(ctx).WithField("interface", e.Interface.Name).Error("an interface appeared after the VM started and no spare NIC was left for it")
		}
		if e.File != nil {
			e.File.Close()
			e.File = nil
		}
	}
	return sb.configureGuestNetwork(ctx, g)
}

// closeNetwork undoes the pod network podvm made; the namespace itself
// goes only if podvm owns it. Repeating it is harmless.
func (sb *Pod) closeNetwork() error {
	var errs []error
	sb.netMu.Lock()
	if sb.loopback != nil {
		errs = append(errs, sb.loopback.Close())
		sb.loopback = nil
	}
	if sb.pod != nil {
		errs = append(errs, sb.pod.Close())
		sb.pod = nil
	}
	sb.netMu.Unlock()
	errs = append(errs, network.Cleanup(filepath.Join(sb.dir, networkState)))
	errs = append(errs, network.RemoveSaved(filepath.Join(sb.dir, netnsState)))
	return errors.Join(errs...)
}

// closeEndpointFiles drops the shim's copies of the NICs' devices once QEMU
// holds its own: a TAP then lives exactly as long as the VM.
func (sb *Pod) closeEndpointFiles() {
	sb.netMu.Lock()
	defer sb.netMu.Unlock()
	if sb.pod == nil {
		return
	}
	for _, e := range sb.pod.Endpoints() {
		if e.File != nil {
			e.File.Close()
			e.File = nil
		}
	}
}
