package hypervisor

import (
	"context"
	"errors"
	"fmt"
)

// ErrNoHotplug says the machine type cannot take devices while it runs.
var ErrNoHotplug = errors.New("this machine type cannot hot-plug devices (microvm): use q35, or let podvm boot a spare NIC")

// AddNIC plugs a network card into the running VM over QMP: the TAP's file
// goes to QEMU by SCM_RIGHTS (getfd), then a tap netdev on it and a
// virtio-net-pci device on a free root port.
func (vm *VM) AddNIC(ctx context.Context, n NIC) error {
	m := machines[vm.cfg.Machine]
	vm.mu.Lock()
	slot := vm.hotplugged
	vm.hotplugged++
	vm.mu.Unlock()
	if slot >= m.hotplugSlots() {
		if m.hotplugSlots() == 0 {
			return ErrNoHotplug
		}
		return fmt.Errorf("no free hot-plug port left (%d in use)", m.hotplugSlots())
	}
	id := fmt.Sprintf("hpnet%d", slot)
	if err := vm.qmp.ExecuteWithFile(ctx, "getfd", map[string]string{"fdname": id}, nil, n.File); err != nil {
		return fmt.Errorf("pass the TAP to QEMU: %w", err)
	}
	if err := vm.qmp.Execute(ctx, "netdev_add", map[string]any{"type": "tap", "id": id, "fd": id, "vhost": false}, nil); err != nil {
		return fmt.Errorf("netdev_add: %w", err)
	}
	dev := map[string]any{"driver": "virtio-net-pci", "id": id + "-dev", "netdev": id, "mac": n.MAC.String(), "bus": hotplugPort(slot)}
	if n.MTU > 0 && n.MTU != 1500 {
		dev["host_mtu"] = n.MTU
	}
	if err := vm.qmp.Execute(ctx, "device_add", dev, nil); err != nil {
		return fmt.Errorf("device_add: %w", err)
	}
	return nil
}

// CanHotplug reports whether NICs can be added to the running VM.
func (vm *VM) CanHotplug() bool { return machines[vm.cfg.Machine].hotplugSlots() > 0 }

// MachineHotplugs reports whether a machine type takes NICs while it runs.
func MachineHotplugs(machine string) bool {
	m, ok := machines[machine]
	return ok && m.hotplugSlots() > 0
}
