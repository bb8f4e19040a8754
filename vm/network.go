package vm

import (
	"context"

	agentapi "github.com/podvm/podvm/api/agent/v1"
	"github.com/podvm/podvm/network"
)

// ConfigureNetwork gives the guest the pod network found on the host: its
// NICs (found by MAC) get the interfaces' names, MTUs and addresses, then
// the routes and neighbours.
func (g *Guest) ConfigureNetwork(ctx context.Context, ifaces []network.Interface, routes []network.Route, neighs []network.Neighbour) error {
	cfg := guestNetwork(ifaces, routes, neighs)
	for _, i := range cfg.Interfaces {
		// A restored guest's NICs have the template's MACs.
		cur := i.CurrentMac
		if cur == "" {
			cur = i.Mac
		}
		if m, ok := g.macs[cur]; ok {
			i.CurrentMac = m
		}
	}
	return g.call(ctx, request, "configure the guest's network", func(ctx context.Context) error {
		_, err := g.network.Configure(ctx, cfg)
		return err
	})
}

// guestNetwork is the agent's description of the pod network.
func guestNetwork(ifaces []network.Interface, routes []network.Route, neighs []network.Neighbour) *agentapi.NetworkConfig {
	c := &agentapi.NetworkConfig{}
	for _, i := range ifaces {
		gi := &agentapi.Interface{Name: i.Name, Mac: i.HardwareAddr.String(), Mtu: uint32(i.MTU), Addresses: i.Addresses}
		if i.BootMAC != nil {
			gi.CurrentMac = i.BootMAC.String()
		}
		c.Interfaces = append(c.Interfaces, gi)
	}
	for _, r := range routes {
		c.Routes = append(c.Routes, &agentapi.Route{Dest: r.Dest, Gateway: r.Gateway, Device: r.Device, Scope: uint32(r.Scope), Family: uint32(r.Family)})
	}
	for _, n := range neighs {
		c.Neighbours = append(c.Neighbours, &agentapi.Neighbour{Ip: n.IP, Mac: n.HardwareAddr.String(), Device: n.Device})
	}
	return c
}

// SetSysctls applies network sysctls (net.*) to the guest's network
// namespace, which is the pod's.
func (g *Guest) SetSysctls(ctx context.Context, sysctls map[string]string) error {
	if len(sysctls) == 0 {
		return nil
	}
	return g.call(ctx, request, "set the pod's network sysctls", func(ctx context.Context) error {
		_, err := g.network.SetSysctls(ctx, &agentapi.SysctlsRequest{Sysctls: sysctls})
		return err
	})
}
