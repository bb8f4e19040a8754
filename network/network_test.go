package network

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/podvm/podvm/test/harness"
)

// testNS makes a namespace the test owns and removes it afterwards.
func testNS(t *testing.T, name string) *Namespace {
	t.Helper()
	n, err := CreateNS(fmt.Sprintf("podvm-test-%s-%d", name, os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Remove(); err != nil {
			t.Error(err)
		}
	})
	return n
}

func isNSFS(t *testing.T, path string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false
	}
	return st.Type == unix.NSFS_MAGIC
}

func TestNamespaceLifecycle(t *testing.T) {
	harness.NeedRoot(t)
	harness.WatchLeaks(t)
	n, err := CreateNS(fmt.Sprintf("podvm-test-life-%d", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	if !n.Owned || !isNSFS(t, n.Path) {
		t.Fatalf("%+v is not an owned nsfs mount", n)
	}
	if _, err := CreateNS(filepath.Base(n.Path)); err == nil {
		t.Error("a second namespace of the same name was created")
	}
	state := filepath.Join(t.TempDir(), "netns.json")
	if err := SaveNS(state, n); err != nil {
		t.Fatal(err)
	}
	// However often teardown runs, the namespace goes exactly once.
	for i := 0; i < 3; i++ {
		if err := RemoveSaved(state); err != nil {
			t.Fatalf("RemoveSaved #%d: %v", i, err)
		}
	}
	if _, err := os.Stat(n.Path); !os.IsNotExist(err) {
		t.Errorf("%s still exists: %v", n.Path, err)
	}
	// A namespace podvm was given is never removed.
	given := testNS(t, "given")
	adopted := &Namespace{Path: given.Path}
	if err := adopted.Remove(); err != nil || !isNSFS(t, given.Path) {
		t.Errorf("removing an adopted namespace: %v", err)
	}
	if _, err := CreateNS("../escape"); err == nil {
		t.Error("a name with a slash was accepted")
	}
}

// podWithVeth builds what CNI leaves: a pod namespace whose eth0 (a veth to
// a peer namespace) has an address and a default route.
func podWithVeth(t *testing.T) (pod, peer *Namespace, h *netlink.Handle) {
	t.Helper()
	return podWithVethNamed(t, "")
}

// podWithVethNamed is podWithVeth for one of several pods of a test.
func podWithVethNamed(t *testing.T, name string) (pod, peer *Namespace, h *netlink.Handle) {
	t.Helper()
	pod, peer = testNS(t, "pod"+name), testNS(t, "peer"+name)
	var err error
	h, err = handleAt(pod.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	ph, err := handleAt(peer.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ph.Close)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1450}, PeerName: "peer0"}
	if err := h.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	peerLink, err := h.LinkByName("peer0")
	if err != nil {
		t.Fatal(err)
	}
	peerNS, _ := os.Open(peer.Path)
	defer peerNS.Close()
	if err := h.LinkSetNsFd(peerLink, int(peerNS.Fd())); err != nil {
		t.Fatal(err)
	}
	eth0, _ := h.LinkByName("eth0")
	addr, _ := netlink.ParseAddr("10.99.0.2/24")
	if err := h.AddrAdd(eth0, addr); err != nil {
		t.Fatal(err)
	}
	h.LinkSetUp(eth0)
	if err := h.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.ParseIP("10.99.0.1")}); err != nil {
		t.Fatal(err)
	}
	return pod, peer, h
}

func TestModels(t *testing.T) {
	harness.NeedRoot(t)
	for _, model := range Models() {
		t.Run(string(model), func(t *testing.T) {
			harness.WatchLeaks(t)
			pod, _, h := podWithVeth(t)
			eth0, _ := h.LinkByName("eth0")
			mac := eth0.Attrs().HardwareAddr.String()
			state := filepath.Join(t.TempDir(), "network.json")
			p, err := OpenPod(pod.Path, model, state)
			if err != nil {
				t.Fatal(err)
			}
			eps, err := p.Attach()
			if err != nil {
				t.Fatal(err)
			}
			if len(eps) != 1 || eps[0].File == nil {
				t.Fatalf("endpoints %+v", eps)
			}
			if again, err := p.Attach(); err != nil || len(again) != 0 {
				t.Errorf("second Attach: %v, %v", again, err)
			}
			iface := eps[0].Interface
			if iface.Name != "eth0" || (iface.HardwareAddr.String() != mac) != (model == MacVTap) || iface.MTU != 1450 || len(iface.Addresses) != 1 || iface.Addresses[0] != "10.99.0.2/24" {
				t.Errorf("guest interface %+v", iface)
			}
			ifaces, routes, _ := p.Guest()
			if len(ifaces) != 1 {
				t.Fatalf("Guest: %v", ifaces)
			}
			var def bool
			for _, r := range routes {
				if r.Dest == "" && r.Gateway == "10.99.0.1" && r.Device == "eth0" {
					def = true
				}
			}
			if !def {
				t.Errorf("no default route in %+v", routes)
			}
			dev, err := h.LinkByName("podvm0")
			if err != nil {
				t.Fatalf("device podvm0: %v", err)
			}
			switch model {
			case TCFilter:
				for _, l := range []netlink.Link{eth0, dev} {
					fs, err := h.FilterList(l, netlink.MakeHandle(0xffff, 0))
					if err != nil || len(fs) != 1 {
						t.Errorf("filters on %s: %v %v", l.Attrs().Name, fs, err)
					}
				}
				if dev.Attrs().MTU != 1450 {
					t.Errorf("TAP MTU %d", dev.Attrs().MTU)
				}
			case MacVTap:
				if dev.Type() != "macvtap" || dev.Attrs().HardwareAddr.String() != iface.HardwareAddr.String() {
					t.Errorf("macvtap %s %s, guest MAC %s", dev.Type(), dev.Attrs().HardwareAddr, iface.HardwareAddr)
				}
			case Bridge:
				now, _ := h.LinkByName("eth0")
				if now.Attrs().MasterIndex != dev.Attrs().Index || now.Attrs().HardwareAddr.String() == mac {
					t.Errorf("eth0 not on the bridge with a new MAC: %+v", now.Attrs())
				}
				if addrs, _ := h.AddrList(now, netlink.FAMILY_V4); len(addrs) != 0 {
					t.Errorf("eth0 kept its addresses on the bridge: %v", addrs)
				}
			}
			if _, err := os.Stat(state); err != nil {
				t.Errorf("no state file: %v", err)
			}
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			assertClean(t, h, mac)
			if err := p.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
		})
	}
}

// TestMacvtapPerPod: two pods' macvtaps with the same interface index
// (each namespace numbers its own) each get their own device. Through the
// node /dev/tap<index>, which devtmpfs makes once for both, the second
// pod's QEMU got the first pod's frames.
func TestMacvtapPerPod(t *testing.T) {
	harness.NeedRoot(t)
	harness.WatchLeaks(t)
	var index []int
	for _, name := range []string{"a", "b"} {
		pod, _, h := podWithVethNamed(t, name)
		p, err := OpenPod(pod.Path, MacVTap, filepath.Join(t.TempDir(), "network.json"))
		if err != nil {
			t.Fatal(err)
		}
		eps, err := p.Attach()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			eps[0].File.Close()
			if err := p.Close(); err != nil {
				t.Error(err)
			}
		})
		dev, err := h.LinkByName("podvm0")
		if err != nil {
			t.Fatal(err)
		}
		index = append(index, dev.Attrs().Index)
		// The device as the kernel names it in the pod's namespace
		// (ip netns exec mounts that namespace's sysfs).
		out, err := exec.Command("ip", "netns", "exec", filepath.Base(pod.Path), "cat",
			fmt.Sprintf("/sys/class/net/podvm0/macvtap/tap%d/dev", dev.Attrs().Index)).Output()
		if err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(int(eps[0].File.Fd()), &st); err != nil {
			t.Fatal(err)
		}
		if got, want := fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev)), strings.TrimSpace(string(out)); got != want {
			t.Errorf("pod %s: QEMU's file is device %s, the pod's macvtap is %s", name, got, want)
		}
	}
	if index[0] != index[1] {
		t.Fatalf("the macvtaps have indexes %v: the test needs them equal", index)
	}
}

// assertClean checks that only what CNI made is left.
func assertClean(t *testing.T, h *netlink.Handle, mac string) {
	t.Helper()
	links, _ := h.LinkList()
	for _, l := range links {
		if isOurs(l.Attrs().Name) {
			t.Errorf("device %s left", l.Attrs().Name)
		}
	}
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if qs, _ := h.QdiscList(eth0); len(qs) > 0 {
		for _, q := range qs {
			if q.Type() == "ingress" {
				t.Errorf("ingress qdisc left on eth0")
			}
		}
	}
	if eth0.Attrs().HardwareAddr.String() != mac || eth0.Attrs().MasterIndex != 0 {
		t.Errorf("eth0 not restored: %+v", eth0.Attrs())
	}
	addrs, _ := h.AddrList(eth0, netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IPNet.String() != "10.99.0.2/24" {
		t.Errorf("eth0's addresses not restored: %v", addrs)
	}
	routes, _ := h.RouteList(eth0, netlink.FAMILY_V4)
	var def bool
	for _, r := range routes {
		if r.Gw != nil && r.Gw.String() == "10.99.0.1" {
			def = true
		}
	}
	if !def {
		t.Errorf("eth0's default route not restored: %v", routes)
	}
}

// TestCleanupAfterCrash: a process that did not make the endpoints undoes
// them from the state file alone.
func TestCleanupAfterCrash(t *testing.T) {
	harness.NeedRoot(t)
	harness.WatchLeaks(t)
	pod, _, h := podWithVeth(t)
	eth0, _ := h.LinkByName("eth0")
	state := filepath.Join(t.TempDir(), "network.json")
	p, err := OpenPod(pod.Path, Bridge, state)
	if err != nil {
		t.Fatal(err)
	}
	eps, err := p.Attach()
	if err != nil {
		t.Fatal(err)
	}
	// The "crash": the TAP's file closes with the process.
	eps[0].File.Close()
	p.h.Close()
	for i := 0; i < 2; i++ {
		if err := Cleanup(state); err != nil {
			t.Fatal(err)
		}
	}
	assertClean(t, h, eth0.Attrs().HardwareAddr.String())
}

// TestSpare: a NIC made before CNI adds the pod interface, joined to it
// afterwards (ctr run --cni on a microvm).
func TestSpare(t *testing.T) {
	harness.NeedRoot(t)
	for _, model := range []Model{TCFilter, Bridge} {
		t.Run(string(model), func(t *testing.T) {
			harness.WatchLeaks(t)
			pod := testNS(t, "spare")
			state := filepath.Join(t.TempDir(), "network.json")
			p, err := OpenPod(pod.Path, model, state)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			spare, err := p.Spare()
			if err != nil {
				t.Fatal(err)
			}
			if !spare.Spare() || spare.File == nil || spare.BootMAC == nil {
				t.Fatalf("spare %+v", spare)
			}
			if ifaces, _, _ := p.Guest(); len(ifaces) != 0 {
				t.Errorf("a spare is configured in the guest: %v", ifaces)
			}
			// CNI's part, after the task exists.
			h, err := handleAt(pod.Path)
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "peer0"}
			if err := h.LinkAdd(veth); err != nil {
				t.Fatal(err)
			}
			eth0, _ := h.LinkByName("eth0")
			addr, _ := netlink.ParseAddr("10.97.0.2/24")
			h.AddrAdd(eth0, addr)
			h.LinkSetUp(eth0)
			added, err := p.Attach()
			if err != nil {
				t.Fatal(err)
			}
			if len(added) != 1 || added[0] != spare || spare.Spare() {
				t.Fatalf("Attach adopted %+v", added)
			}
			ifaces, _, _ := p.Guest()
			if len(ifaces) != 1 || ifaces[0].Name != "eth0" || ifaces[0].HardwareAddr.String() != eth0.Attrs().HardwareAddr.String() || ifaces[0].BootMAC.String() != spare.BootMAC.String() {
				t.Errorf("guest view %+v", ifaces)
			}
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			links, _ := h.LinkList()
			for _, l := range links {
				if isOurs(l.Attrs().Name) {
					t.Errorf("device %s left", l.Attrs().Name)
				}
			}
		})
	}
	p, err := OpenPod(testNS(t, "mv").Path, MacVTap, filepath.Join(t.TempDir(), "n.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := p.Spare(); err == nil {
		t.Error("macvtap made a spare")
	}
}
