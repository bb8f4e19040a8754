package network

import (
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// devicePrefix names the devices podvm makes in a pod's namespace.
const devicePrefix = "podvm"

func isOurs(name string) bool { return strings.HasPrefix(name, devicePrefix) }

// createTAP makes a TAP device in the namespace at nsPath and returns its
// file. The device is not persistent: it goes away when the last holder of
// the file (QEMU, once it has it) closes it, so a VM that dies cannot leak
// its TAP. A TAP can only be made from inside its namespace (the ioctl
// acts where the calling thread is), hence ns.Do.
func createTAP(nsPath, name string, mtu int) (*os.File, error) {
	var f *os.File
	err := ns.WithNetNSPath(nsPath, func(ns.NetNS) error {
		tap := &netlink.Tuntap{
			LinkAttrs:  netlink.LinkAttrs{Name: name, MTU: mtu},
			Mode:       netlink.TUNTAP_MODE_TAP,
			Flags:      netlink.TUNTAP_VNET_HDR | netlink.TUNTAP_NO_PI | netlink.TUNTAP_ONE_QUEUE,
			Queues:     1,
			NonPersist: true,
		}
		if err := netlink.LinkAdd(tap); err != nil {
			return fmt.Errorf("create TAP %s: %w", name, err)
		}
		f = tap.Fds[0]
		// LinkAdd does not apply the MTU to a TAP.
		if l, err := netlink.LinkByName(name); err == nil && mtu > 0 {
			_ = netlink.LinkSetMTU(l, mtu)
		}
		return nil
	})
	return f, err
}

// openMacvtap opens the character device of macvtap link l, in the
// network namespace at nsPath. Not through /dev/tap<ifindex>: interface
// indexes are per network namespace and devtmpfs is not, so two pods'
// macvtaps often have the same index, and the one node of that name is the
// first one's: a second pod's QEMU would get the first pod's frames. The
// device's own numbers are read from a sysfs mounted in the pod's
// namespace, and the device is opened through a node made in a mount
// namespace of this thread's own, which ends with the thread.
func openMacvtap(nsPath string, l netlink.Link) (*os.File, error) {
	type opened struct {
		f   *os.File
		err error
	}
	ch := make(chan opened, 1)
	go func() {
		// Never unlocked: the thread, in namespaces of its own, ends
		// with the goroutine.
		runtime.LockOSThread()
		f, err := openMacvtapHere(nsPath, l)
		ch <- opened{f, err}
	}()
	r := <-ch
	if r.err != nil {
		return nil, fmt.Errorf("open the device of macvtap %s in %s: %w", l.Attrs().Name, nsPath, r.err)
	}
	return r.f, nil
}

// openMacvtapHere is openMacvtap on a locked thread it may spoil.
func openMacvtapHere(nsPath string, l netlink.Link) (*os.File, error) {
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return nil, fmt.Errorf("unshare the mount namespace: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return nil, fmt.Errorf("make the mounts private: %w", err)
	}
	netns, err := os.Open(nsPath)
	if err != nil {
		return nil, err
	}
	err = unix.Setns(int(netns.Fd()), unix.CLONE_NEWNET)
	netns.Close()
	if err != nil {
		return nil, fmt.Errorf("enter the network namespace: %w", err)
	}
	// A sysfs shows the devices of the network namespace it is mounted
	// from.
	if err := unix.Mount("sysfs", "/sys", "sysfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return nil, fmt.Errorf("mount sysfs: %w", err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/sys/class/net/%s/macvtap/tap%d/dev", l.Attrs().Name, l.Attrs().Index))
	if err != nil {
		return nil, err
	}
	var major, minor uint32
	if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%d:%d", &major, &minor); err != nil {
		return nil, fmt.Errorf("device number %q: %w", b, err)
	}
	if err := unix.Mount("tmpfs", "/sys", "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "size=4k,mode=0700"); err != nil {
		return nil, fmt.Errorf("mount a tmpfs for the device node: %w", err)
	}
	const node = "/sys/tap"
	if err := unix.Mknod(node, unix.S_IFCHR|0o600, int(unix.Mkdev(major, minor))); err != nil {
		return nil, fmt.Errorf("make the device node %d:%d: %w", major, minor, err)
	}
	return os.OpenFile(node, os.O_RDWR|unix.O_CLOEXEC, 0)
}
