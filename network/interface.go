package network

import (
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Interface is a pod interface as the guest must show it: the name, MAC,
// MTU and addresses CNI gave it in the pod's network namespace.
type Interface struct {
	Name         string
	HardwareAddr net.HardwareAddr
	MTU          int
	// Addresses in CIDR form ("10.88.0.5/16").
	Addresses []string
	// BootMAC is the MAC the guest's NIC has before it is configured, when
	// that differs from HardwareAddr (a spare NIC adopted after boot).
	BootMAC net.HardwareAddr
}

// Route is a route of the pod's namespace that goes through a pod
// interface.
type Route struct {
	// Dest is a CIDR; empty for the default route.
	Dest    string
	Gateway string
	Device  string
	// Scope is netlink's: link routes have no gateway.
	Scope  uint8
	Family int
}

// Neighbour is a permanent neighbour entry (static ARP/NDP) of the pod's
// namespace.
type Neighbour struct {
	IP           string
	HardwareAddr net.HardwareAddr
	Device       string
}

// podLinks lists the interfaces of a pod namespace that need a guest NIC:
// those with an address, apart from loopback and podvm's own devices.
func podLinks(h *netlink.Handle) ([]netlink.Link, error) {
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var out []netlink.Link
	for _, l := range links {
		a := l.Attrs()
		if a.Flags&net.FlagLoopback != 0 || isOurs(a.Name) {
			continue
		}
		if a.MasterIndex != 0 {
			// Enslaved already (podvm's bridge model, or something else
			// owns it).
			continue
		}
		addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("addresses of %s: %w", a.Name, err)
		}
		if len(globalAddrs(addrs)) == 0 {
			continue
		}
		out = append(out, l)
	}
	return out, nil
}

func globalAddrs(addrs []netlink.Addr) []string {
	var out []string
	for _, a := range addrs {
		if a.Scope == unix.RT_SCOPE_UNIVERSE && a.IPNet != nil {
			out = append(out, a.IPNet.String())
		}
	}
	return out
}

// describe reads a pod interface's guest view, and the routes and permanent
// neighbours through it.
func describe(h *netlink.Handle, l netlink.Link) (Interface, []Route, []Neighbour, error) {
	a := l.Attrs()
	addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return Interface{}, nil, nil, err
	}
	iface := Interface{Name: a.Name, HardwareAddr: append(net.HardwareAddr(nil), a.HardwareAddr...), MTU: a.MTU, Addresses: globalAddrs(addrs)}
	var routes []Route
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := h.RouteList(l, family)
		if err != nil {
			return iface, nil, nil, fmt.Errorf("routes of %s: %w", a.Name, err)
		}
		for _, r := range rs {
			if r.Table != unix.RT_TABLE_MAIN || r.Protocol == unix.RTPROT_KERNEL {
				// Kernel routes come with the addresses.
				continue
			}
			if family == netlink.FAMILY_V6 && r.Dst != nil && r.Dst.IP.IsLinkLocalUnicast() {
				continue
			}
			rt := Route{Device: a.Name, Scope: uint8(r.Scope), Family: family}
			if r.Dst != nil {
				if ones, _ := r.Dst.Mask.Size(); ones != 0 {
					rt.Dest = r.Dst.String()
				}
			}
			if r.Gw != nil {
				rt.Gateway = r.Gw.String()
			}
			routes = append(routes, rt)
		}
	}
	neighs, err := h.NeighList(a.Index, netlink.FAMILY_ALL)
	if err != nil {
		return iface, routes, nil, fmt.Errorf("neighbours of %s: %w", a.Name, err)
	}
	var ns []Neighbour
	for _, n := range neighs {
		if n.State&netlink.NUD_PERMANENT != 0 && n.IP != nil && len(n.HardwareAddr) > 0 {
			ns = append(ns, Neighbour{IP: n.IP.String(), HardwareAddr: n.HardwareAddr, Device: a.Name})
		}
	}
	return iface, routes, ns, nil
}
