package network

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Pod is podvm's side of a pod's network namespace: the pod interfaces
// joined to devices for the VM's NICs. What it makes is recorded in a state
// file, so that Cleanup can undo it after a crash.
type Pod struct {
	ns        string
	model     Model
	joiner    joiner
	h         *netlink.Handle
	stateFile string
	eps       []*Endpoint
}

// Endpoint is one pod interface joined to a device for the VM.
type Endpoint struct {
	// Interface is what the guest's NIC must look like; Routes and
	// Neighbours are the pod namespace's through it, as found before the
	// join (some models move them to the guest).
	Interface  Interface
	Routes     []Route
	Neighbours []Neighbour
	// File is the TAP (or macvtap) QEMU gets. The caller closes it once
	// QEMU holds its own copy.
	File *os.File
	// BootMAC is the MAC the guest's NIC booted with, when it differs from
	// Interface.HardwareAddr: a spare NIC adopted for an interface that
	// appeared after boot. The guest changes its MAC to the interface's.
	BootMAC net.HardwareAddr
	state   endpointState
}

// Spare reports whether the endpoint still waits for a pod interface.
func (e *Endpoint) Spare() bool { return e.state.Pod == "" }

type podState struct {
	NS        string          `json:"ns"`
	Model     Model           `json:"model"`
	Endpoints []endpointState `json:"endpoints"`
}

// OpenPod works on the network namespace at nsPath with the given model,
// recording what it makes in stateFile.
func OpenPod(nsPath string, model Model, stateFile string) (*Pod, error) {
	j, err := joinerFor(model)
	if err != nil {
		return nil, err
	}
	h, err := handleAt(nsPath)
	if err != nil {
		return nil, err
	}
	return &Pod{ns: nsPath, model: model, joiner: j, h: h, stateFile: stateFile}, nil
}

func handleAt(nsPath string) (*netlink.Handle, error) {
	nsh, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, fmt.Errorf("open network namespace %s: %w", nsPath, err)
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", nsPath, err)
	}
	return h, nil
}

// Attach joins every pod interface not joined yet and returns the new
// endpoints (none when nothing new appeared).
func (p *Pod) Attach() ([]*Endpoint, error) {
	links, err := podLinks(p.h)
	if err != nil {
		return nil, err
	}
	var added []*Endpoint
	for _, l := range links {
		if p.joined(l.Attrs().Name) {
			continue
		}
		iface, routes, neighs, err := describe(p.h, l)
		if err != nil {
			return added, err
		}
		if spare := p.spare(); spare != nil {
			if err := p.adopt(spare, l, iface, routes, neighs); err != nil {
				return added, err
			}
			added = append(added, spare)
			continue
		}
		e := &Endpoint{Interface: iface, Routes: routes, Neighbours: neighs,
			state: endpointState{Pod: l.Attrs().Name, Device: fmt.Sprintf("%s%d", devicePrefix, len(p.eps)), Addresses: iface.Addresses, Routes: routes}}
		f, err := p.joiner.join(p.h, p.ns, l, &e.state)
		if err != nil {
			return added, fmt.Errorf("join %s in %s (%s model): %w", l.Attrs().Name, p.ns, p.model, err)
		}
		e.File = f
		if e.state.GuestMAC != "" {
			if mac, err := net.ParseMAC(e.state.GuestMAC); err == nil {
				e.Interface.HardwareAddr = mac
			}
		}
		p.eps = append(p.eps, e)
		added = append(added, e)
		if err := p.save(); err != nil {
			return added, err
		}
	}
	return added, nil
}

// Spare makes a TAP joined to nothing yet, with a random MAC, for a NIC the
// VM boots with; Attach joins it to the next pod interface that appears.
// That is how an interface CNI adds after the VM started (`ctr run --cni`
// runs CNI after the task exists) reaches a microvm, which cannot hot-plug.
func (p *Pod) Spare() (*Endpoint, error) {
	e := &Endpoint{state: endpointState{Device: fmt.Sprintf("%s%d", devicePrefix, len(p.eps))}}
	tap, err := p.joiner.spareTAP(&e.state)
	if err != nil {
		return nil, err
	}
	f, err := createTAP(p.ns, tap, 0)
	if err != nil {
		return nil, err
	}
	mac := randomMAC()
	e.File = f
	e.Interface = Interface{Name: tap, HardwareAddr: mac, MTU: 1500}
	e.BootMAC = mac
	p.eps = append(p.eps, e)
	return e, p.save()
}

func (p *Pod) spare() *Endpoint {
	for _, e := range p.eps {
		if e.Spare() {
			return e
		}
	}
	return nil
}

// adopt joins a pod interface to the spare's TAP.
func (p *Pod) adopt(e *Endpoint, l netlink.Link, iface Interface, routes []Route, neighs []Neighbour) error {
	e.state.Pod = l.Attrs().Name
	e.state.Addresses, e.state.Routes = iface.Addresses, routes
	if err := p.joiner.adopt(p.h, l, &e.state); err != nil {
		e.state.Pod = ""
		return fmt.Errorf("join %s to the spare NIC (%s model): %w", l.Attrs().Name, p.model, err)
	}
	iface.BootMAC = e.BootMAC
	e.Interface, e.Routes, e.Neighbours = iface, routes, neighs
	return p.save()
}

func (p *Pod) joined(name string) bool {
	for _, e := range p.eps {
		if e.state.Pod == name {
			return true
		}
	}
	return false
}

// Endpoints are the joined pod interfaces, in the order they were joined.
func (p *Pod) Endpoints() []*Endpoint { return p.eps }

// Guest describes the joined interfaces and the routes and permanent
// neighbours through them, for the guest to configure.
func (p *Pod) Guest() ([]Interface, []Route, []Neighbour) {
	var ifaces []Interface
	var routes []Route
	var neighs []Neighbour
	for _, e := range p.eps {
		if e.Spare() {
			continue
		}
		ifaces = append(ifaces, e.Interface)
		routes = append(routes, e.Routes...)
		neighs = append(neighs, e.Neighbours...)
	}
	return ifaces, routes, neighs
}

func (p *Pod) save() error {
	st := podState{NS: p.ns, Model: p.model}
	for _, e := range p.eps {
		st.Endpoints = append(st.Endpoints, e.state)
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp := p.stateFile + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p.stateFile)
}

// Close undoes every join, closes the endpoints' files and removes the
// state file. It is safe to call twice.
func (p *Pod) Close() error {
	var errs []error
	for _, e := range p.eps {
		if e.File != nil {
			e.File.Close()
			e.File = nil
		}
		if err := p.joiner.leave(p.h, &e.state); err != nil {
			errs = append(errs, err)
		}
	}
	p.eps = nil
	if err := os.Remove(p.stateFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	if p.h != nil {
		p.h.Close()
		p.h = nil
	}
	return errors.Join(errs...)
}

// Cleanup undoes what a Pod recorded in stateFile, for a process that did
// not make it (`delete` after a crash). No state file, or a namespace that
// is gone, means nothing to do.
func Cleanup(stateFile string) error {
	b, err := os.ReadFile(stateFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var st podState
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("read %s: %w", stateFile, err)
	}
	j, err := joinerFor(st.Model)
	if err != nil {
		return err
	}
	if _, err := os.Stat(st.NS); err == nil {
		h, err := handleAt(st.NS)
		if err != nil {
			return err
		}
		defer h.Close()
		for i := range st.Endpoints {
			if err := j.leave(h, &st.Endpoints[i]); err != nil {
				return err
			}
		}
	}
	return os.Remove(stateFile)
}
