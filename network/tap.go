package network

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

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

// openMacvtap opens the character device of a macvtap link, which
// devtmpfs creates as /dev/tap<ifindex> a moment after the link.
func openMacvtap(dev, nsPath, name string) (*os.File, error) {
	var err error
	for i := 0; i < 100; i++ {
		var f *os.File
		if f, err = os.OpenFile(dev, os.O_RDWR|unix.O_CLOEXEC, 0); err == nil {
			return f, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil, fmt.Errorf("open %s for macvtap %s in %s: %w (is devtmpfs mounted on /dev?)", dev, name, nsPath, err)
}
