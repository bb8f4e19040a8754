package vm

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/podvm/podvm/hypervisor"
	"github.com/podvm/podvm/network"
	"github.com/podvm/podvm/test/harness"
)

// TestGuestNetwork boots a VM inside a pod namespace whose eth0 is a veth
// to a peer namespace, joins eth0 to the VM with each network model, pings
// the guest from the peer and talks TCP to a server in a guest container
// (which proves that the guest answers, not the pod namespace).
func TestGuestNetwork(t *testing.T) {
	cfg := harness.VMConfig(t)
	for _, model := range network.Models() {
		t.Run(string(model), func(t *testing.T) {
			harness.WatchLeaks(t)
			pod, peer := harness.VethPair(t, "10.98.0.2/24", "10.98.0.1/24")
			p, err := network.OpenPod(pod, model, filepath.Join(t.TempDir(), "network.json"))
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			eps, err := p.Attach()
			if err != nil {
				t.Fatal(err)
			}
			var nics []hypervisor.NIC
			for _, e := range eps {
				nics = append(nics, hypervisor.NIC{MAC: e.Interface.HardwareAddr, File: e.File, MTU: e.Interface.MTU})
			}
			share := t.TempDir()
			if err := harness.BusyboxRootfs(filepath.Join(share, "c1", "rootfs")); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			g, err := Boot(ctx, cfg, Options{ID: "podvm-test-net", NetNS: pod, NICs: nics, Shares: []hypervisor.Share{{Tag: "podvm", Path: share}}})
			if err != nil {
				t.Fatal(err)
			}
			defer g.Shutdown(context.Background())
			// QEMU holds the devices now.
			for _, e := range eps {
				e.File.Close()
				e.File = nil
			}
			// QEMU runs in the pod's namespace: /proc/<pid>/ns/net is the
			// pod's, which CNI and CRI rely on.
			if got, want := nsOf(g.VM.PID()), nsIno(t, pod); got != want {
				t.Errorf("QEMU's network namespace %s, want the pod's %s", got, want)
			}
			ifaces, routes, neighs := p.Guest()
			if err := g.ConfigureNetwork(ctx, ifaces, routes, neighs); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command("nsenter", "--net="+peer, harness.Busybox, "ping", "-c", "3", "-W", "5", "10.98.0.2").CombinedOutput()
			if err != nil {
				t.Fatalf("ping from the peer: %v\n%s", err, out)
			}
			// A server in a container of the guest, on the guest's (the
			// pod's) network.
			spec := specconv.Example()
			spec.Root.Path = "/run/podvm/shared/c1/rootfs"
			spec.Root.Readonly = false
			spec.Process.Terminal = false
			spec.Process.Args = []string{"nc", "-l", "-p", "7777", "-e", "echo", "hi from the guest"}
			var nss []specs.LinuxNamespace
			for _, ns := range spec.Linux.Namespaces {
				if ns.Type != specs.NetworkNamespace {
					nss = append(nss, ns)
				}
			}
			spec.Linux.Namespaces = nss
			b, _ := json.Marshal(spec)
			if _, err := g.CreateContainer(ctx, Container{ID: "srv", Spec: b, Storages: []Storage{shareStorage}}); err != nil {
				t.Fatal(err)
			}
			if _, err := g.StartProcess(ctx, "srv", ""); err != nil {
				t.Fatal(err)
			}
			var got []byte
			for i := 0; i < 50; i++ {
				got, err = exec.Command("nsenter", "--net="+peer, harness.Busybox, "nc", "-w", "5", "10.98.0.2", "7777").CombinedOutput()
				if strings.Contains(string(got), "hi from the guest") {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if !strings.Contains(string(got), "hi from the guest") {
				t.Errorf("TCP to the guest server: %v: %q", err, got)
			}
			g.DeleteContainer(ctx, "srv")
		})
	}
}

func nsOf(pid int) string {
	l, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
	return l
}

func nsIno(t *testing.T, path string) string {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("net:[%d]", st.Ino)
}

// TestNICHotplug: on q35, a NIC for an interface CNI added after boot is
// plugged into the running VM over QMP, then configured by the agent.
func TestNICHotplug(t *testing.T) {
	cfg := harness.VMConfig(t)
	cfg.Hypervisor.Machine = "q35"
	harness.WatchLeaks(t)
	pod, peer := harness.NetNS(t, "pod"), harness.NetNS(t, "peer")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	g, err := Boot(ctx, cfg, Options{ID: "podvm-test-hotplug", NetNS: pod})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Shutdown(context.Background())
	if !g.VM.CanHotplug() {
		t.Fatal("q35 says it cannot hot-plug")
	}
	// CNI's turn, after the VM exists.
	harness.AddVeth(t, pod, peer, "10.96.0.2/24", "10.96.0.1/24")
	p, err := network.OpenPod(pod, network.TCFilter, filepath.Join(t.TempDir(), "network.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	eps, err := p.Attach()
	if err != nil || len(eps) != 1 {
		t.Fatalf("attach: %v %v", eps, err)
	}
	e := eps[0]
	if err := g.VM.AddNIC(ctx, hypervisor.NIC{MAC: e.Interface.HardwareAddr, File: e.File, MTU: e.Interface.MTU}); err != nil {
		t.Fatal(err)
	}
	e.File.Close()
	e.File = nil
	ifaces, routes, neighs := p.Guest()
	if err := g.ConfigureNetwork(ctx, ifaces, routes, neighs); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("nsenter", "--net="+peer, harness.Busybox, "ping", "-c", "3", "-W", "5", "10.96.0.2").CombinedOutput(); err != nil {
		t.Fatalf("ping the hot-plugged NIC: %v\n%s", err, out)
	}
}
