package harness

import (
	"fmt"
	"os"
	"os/exec"
	"sync/atomic"
	"testing"
)

var nsSeq atomic.Int64

// VethPair makes what CNI leaves for a pod: a pod namespace whose eth0 is a
// veth to a peer namespace, with addresses (CIDRs) on both ends and a
// default route in the pod through the peer. It returns the namespaces'
// paths and removes them when the test ends.
func VethPair(t testing.TB, podAddr, peerAddr string) (pod, peer string) {
	t.Helper()
	NeedRoot(t)
	n := nsSeq.Add(1)
	podName := fmt.Sprintf("podvm-t%d-pod%d", os.Getpid(), n)
	peerName := fmt.Sprintf("podvm-t%d-peer%d", os.Getpid(), n)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	for _, name := range []string{podName, peerName} {
		run("netns", "add", name)
		name := name
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
		run("-n", name, "link", "set", "lo", "up")
	}
	run("-n", podName, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0", "netns", peerName)
	run("-n", podName, "addr", "add", podAddr, "dev", "eth0")
	run("-n", peerName, "addr", "add", peerAddr, "dev", "peer0")
	run("-n", podName, "link", "set", "eth0", "up")
	run("-n", peerName, "link", "set", "peer0", "up")
	gw := peerAddr
	for i, c := range gw {
		if c == '/' {
			gw = gw[:i]
			break
		}
	}
	run("-n", podName, "route", "add", "default", "via", gw)
	return "/var/run/netns/" + podName, "/var/run/netns/" + peerName
}
