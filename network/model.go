package network

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Model is how a pod interface is joined to the device the VM's NIC sits
// on.
type Model string

const (
	// TCFilter (the default, Kata's tcfilter): a TAP, and tc ingress
	// filters that redirect every frame from the pod interface to the TAP
	// and back. The guest takes the pod interface's MAC and addresses, so
	// CNI's view stays true.
	TCFilter Model = "tcfilter"
	// MacVTap: a macvtap device in bridge mode on the pod interface. The
	// guest uses the macvtap's own MAC and takes the pod interface's
	// addresses (the kernel refuses a macvtap with its lower device's MAC).
	MacVTap Model = "macvtap"
	// Bridge: a Linux bridge over the pod interface and a TAP; the pod
	// interface gives its MAC to the guest and takes a random one.
	Bridge Model = "bridge"
)

// Models lists the supported models.
func Models() []Model { return []Model{TCFilter, MacVTap, Bridge} }

// joiner is one model's way of joining a pod interface to a device for
// the VM, and of undoing it.
type joiner interface {
	// join returns the file QEMU gets (a TAP's or a macvtap's) and fills
	// the endpoint's record of what it made.
	join(h *netlink.Handle, nsPath string, pod netlink.Link, e *endpointState) (*os.File, error)
	// leave undoes join; what is gone already is not an error.
	leave(h *netlink.Handle, e *endpointState) error
	// spareTAP names the TAP a spare endpoint makes ahead of its pod
	// interface, or says the model cannot have one.
	spareTAP(e *endpointState) (string, error)
	// adopt joins a pod interface to the spare's TAP (made already).
	adopt(h *netlink.Handle, pod netlink.Link, e *endpointState) error
}

func joinerFor(m Model) (joiner, error) {
	switch m {
	case TCFilter, "":
		return tcFilter{}, nil
	case MacVTap:
		return macvtap{}, nil
	case Bridge:
		return bridge{}, nil
	}
	return nil, fmt.Errorf("unknown network model %q: use tcfilter, macvtap or bridge", m)
}

// endpointState is what an endpoint made, kept on disk so that it can be
// undone after a crash.
type endpointState struct {
	Pod    string `json:"pod"`               // the pod interface (veth)
	Device string `json:"device"`            // the TAP, macvtap or bridge podvm made
	TAP    string `json:"tap,omitempty"`     // bridge model: the TAP on the bridge
	PodMAC string `json:"pod_mac,omitempty"` // bridge model: the MAC the pod interface had
	// Addresses and Routes of the pod interface, which the bridge model
	// moves to the guest and gives back when it leaves.
	Addresses []string `json:"addresses,omitempty"`
	Routes    []Route  `json:"routes,omitempty"`
	Moved     bool     `json:"moved,omitempty"`
	// GuestMAC is the MAC the guest must use when it is not the pod
	// interface's (macvtap model).
	GuestMAC string `json:"guest_mac,omitempty"`
}

type tcFilter struct{}

func (tcFilter) join(h *netlink.Handle, nsPath string, pod netlink.Link, e *endpointState) (*os.File, error) {
	f, err := createTAP(nsPath, e.Device, pod.Attrs().MTU)
	if err != nil {
		return nil, err
	}
	if err := (tcFilter{}).adopt(h, pod, e); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (tcFilter) spareTAP(e *endpointState) (string, error) { return e.Device, nil }

func (tcFilter) adopt(h *netlink.Handle, pod netlink.Link, e *endpointState) error {
	tap, err := h.LinkByName(e.Device)
	if err == nil && tap.Attrs().MTU != pod.Attrs().MTU {
		err = h.LinkSetMTU(tap, pod.Attrs().MTU)
	}
	if err == nil {
		err = h.LinkSetUp(tap)
	}
	if err != nil {
		return fmt.Errorf("TAP %s: %w", e.Device, err)
	}
	for _, pair := range [][2]netlink.Link{{pod, tap}, {tap, pod}} {
		if err := redirectIngress(h, pair[0], pair[1]); err != nil {
			_ = tcFilter{}.leave(h, e)
			return err
		}
	}
	return nil
}

func (tcFilter) leave(h *netlink.Handle, e *endpointState) error {
	// The TAP vanishes with its last file; the pod interface keeps an
	// ingress qdisc (and the filter in it) until it is removed here.
	return removeIngress(h, e.Pod)
}

// redirectIngress sends every frame arriving on from out of to.
func redirectIngress(h *netlink.Handle, from, to netlink.Link) error {
	ingress := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: from.Attrs().Index,
		Handle:    netlink.MakeHandle(0xffff, 0),
		Parent:    netlink.HANDLE_INGRESS,
	}}
	if err := h.QdiscAdd(ingress); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add ingress qdisc to %s: %w", from.Attrs().Name, err)
	}
	filter := &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: from.Attrs().Index,
			Parent:    netlink.MakeHandle(0xffff, 0),
			Priority:  1,
			Protocol:  unix.ETH_P_ALL,
		},
		Actions: []netlink.Action{netlink.NewMirredAction(to.Attrs().Index)},
	}
	if err := h.FilterAdd(filter); err != nil {
		return fmt.Errorf("redirect %s to %s: %w", from.Attrs().Name, to.Attrs().Name, err)
	}
	return nil
}

func removeIngress(h *netlink.Handle, name string) error {
	l, err := h.LinkByName(name)
	if err != nil {
		return nil // the interface is gone, and its qdisc with it
	}
	ingress := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: l.Attrs().Index,
		Handle:    netlink.MakeHandle(0xffff, 0),
		Parent:    netlink.HANDLE_INGRESS,
	}}
	if err := h.QdiscDel(ingress); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("remove ingress qdisc of %s: %w", name, err)
	}
	return nil
}

type macvtap struct{}

func (macvtap) join(h *netlink.Handle, nsPath string, pod netlink.Link, e *endpointState) (*os.File, error) {
	mac := randomMAC()
	// NewLinkAttrs, not a zero LinkAttrs: a zero TxQLen makes a macvtap
	// whose queue holds nothing, and it drops every frame for the guest.
	attrs := netlink.NewLinkAttrs()
	attrs.Name, attrs.ParentIndex, attrs.MTU, attrs.HardwareAddr = e.Device, pod.Attrs().Index, pod.Attrs().MTU, mac
	mv := &netlink.Macvtap{Macvlan: netlink.Macvlan{LinkAttrs: attrs, Mode: netlink.MACVLAN_MODE_BRIDGE}}
	if err := h.LinkAdd(mv); err != nil {
		return nil, fmt.Errorf("create macvtap %s on %s: %w", e.Device, pod.Attrs().Name, err)
	}
	e.GuestMAC = mac.String()
	l, err := h.LinkByName(e.Device)
	if err == nil {
		err = h.LinkSetUp(l)
	}
	if err == nil {
		err = moveAddresses(h, pod, e)
	}
	if err != nil {
		_ = macvtap{}.leave(h, e)
		return nil, fmt.Errorf("set %s up: %w", e.Device, err)
	}
	// The link's character device carries the frames.
	f, err := openMacvtap(nsPath, l)
	if err != nil {
		_ = h.LinkDel(l)
		return nil, err
	}
	return f, nil
}

func (macvtap) spareTAP(*endpointState) (string, error) {
	return "", errors.New("the macvtap model makes its device on the pod interface, so it cannot have a spare ahead of it: use tcfilter or bridge, or q35 for hot-plug")
}

func (macvtap) adopt(*netlink.Handle, netlink.Link, *endpointState) error {
	return errors.New("the macvtap model has no spare to adopt")
}

func (macvtap) leave(h *netlink.Handle, e *endpointState) error {
	var errs []error
	if l, err := h.LinkByName(e.Device); err == nil {
		if err := h.LinkDel(l); err != nil {
			errs = append(errs, err)
		}
	}
	if pod, err := h.LinkByName(e.Pod); err == nil && e.Moved {
		if err := restoreAddresses(h, pod, e); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

type bridge struct{}

func (bridge) join(h *netlink.Handle, nsPath string, pod netlink.Link, e *endpointState) (*os.File, error) {
	e.TAP, _ = bridge{}.spareTAP(e)
	f, err := createTAP(nsPath, e.TAP, pod.Attrs().MTU)
	if err != nil {
		return nil, err
	}
	if err := (bridge{}).adopt(h, pod, e); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (bridge) spareTAP(e *endpointState) (string, error) { return e.Device + "t", nil }

func (bridge) adopt(h *netlink.Handle, pod netlink.Link, e *endpointState) error {
	e.TAP, _ = bridge{}.spareTAP(e)
	e.PodMAC = pod.Attrs().HardwareAddr.String()
	fail := func(err error) error {
		_ = bridge{}.leave(h, e)
		return err
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name, attrs.MTU = e.Device, pod.Attrs().MTU
	br := &netlink.Bridge{LinkAttrs: attrs}
	if err := h.LinkAdd(br); err != nil {
		return fail(fmt.Errorf("create bridge %s: %w", e.Device, err))
	}
	// The guest takes the pod interface's MAC and addresses; the pod
	// interface, now a bridge port, must keep neither, or the namespace
	// would answer for the guest.
	if err := h.LinkSetHardwareAddr(pod, randomMAC()); err != nil {
		return fail(fmt.Errorf("change the MAC of %s: %w", pod.Attrs().Name, err))
	}
	if err := moveAddresses(h, pod, e); err != nil {
		return fail(err)
	}
	tap, err := h.LinkByName(e.TAP)
	if err != nil {
		return fail(err)
	}
	for _, port := range []netlink.Link{pod, tap} {
		if err := h.LinkSetMaster(port, br); err != nil {
			return fail(fmt.Errorf("add %s to bridge %s: %w", port.Attrs().Name, e.Device, err))
		}
		if err := h.LinkSetUp(port); err != nil {
			return fail(err)
		}
	}
	if err := h.LinkSetUp(br); err != nil {
		return fail(err)
	}
	return nil
}

func (bridge) leave(h *netlink.Handle, e *endpointState) error {
	var errs []error
	if pod, err := h.LinkByName(e.Pod); err == nil {
		_ = h.LinkSetNoMaster(pod)
		if mac, err := net.ParseMAC(e.PodMAC); err == nil {
			if err := h.LinkSetHardwareAddr(pod, mac); err != nil {
				errs = append(errs, fmt.Errorf("restore the MAC of %s: %w", e.Pod, err))
			}
		}
		if e.Moved {
			if err := restoreAddresses(h, pod, e); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if br, err := h.LinkByName(e.Device); err == nil {
		if err := h.LinkDel(br); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// randomMAC is a locally administered unicast address.
func randomMAC() net.HardwareAddr {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	b[0] = b[0]&0xfe | 0x02
	return b
}

// moveAddresses takes the pod interface's addresses away (the guest has
// them now): otherwise the namespace itself would answer for them.
func moveAddresses(h *netlink.Handle, pod netlink.Link, e *endpointState) error {
	e.Moved = true
	for _, cidr := range e.Addresses {
		if a, err := netlink.ParseAddr(cidr); err == nil {
			if err := h.AddrDel(pod, a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				return fmt.Errorf("move %s from %s: %w", cidr, pod.Attrs().Name, err)
			}
		}
	}
	return nil
}

// restoreAddresses gives a pod interface back the addresses and routes the
// bridge model moved to the guest.
func restoreAddresses(h *netlink.Handle, pod netlink.Link, e *endpointState) error {
	var errs []error
	for _, cidr := range e.Addresses {
		a, err := netlink.ParseAddr(cidr)
		if err != nil {
			continue
		}
		if err := h.AddrAdd(pod, a); err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("give %s back to %s: %w", cidr, e.Pod, err))
		}
	}
	for _, r := range e.Routes {
		route := &netlink.Route{LinkIndex: pod.Attrs().Index, Scope: netlink.Scope(r.Scope), Family: r.Family}
		if r.Dest != "" {
			if _, dst, err := net.ParseCIDR(r.Dest); err == nil {
				route.Dst = dst
			}
		}
		if r.Gateway != "" {
			route.Gw = net.ParseIP(r.Gateway)
		}
		if err := h.RouteAdd(route); err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("give route %s back to %s: %w", orDefault(r.Dest), e.Pod, err))
		}
	}
	e.Moved = false
	return errors.Join(errs...)
}

func orDefault(dest string) string {
	if dest == "" {
		return "default"
	}
	return dest
}
