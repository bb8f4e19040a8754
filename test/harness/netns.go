package harness

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
)

var nsSeq atomic.Int64

// NetNS makes a network namespace for the test (loopback up) and removes it
// when the test ends. It returns the namespace's path.
func NetNS(t testing.TB, role string) string {
	t.Helper()
	NeedRoot(t)
	name := fmt.Sprintf("podvm-t%d-%s%d", os.Getpid(), role, nsSeq.Add(1))
	ip(t, "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	ip(t, "-n", name, "link", "set", "lo", "up")
	return "/var/run/netns/" + name
}

func ip(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %v: %v: %s", args, err, out)
	}
}

// AddVeth does what CNI does for a pod: eth0 in the pod namespace, a veth
// to the peer namespace, addresses (CIDRs) on both ends and a default route
// in the pod through the peer.
func AddVeth(t testing.TB, pod, peer, podAddr, peerAddr string) {
	t.Helper()
	podName, peerName := strings.TrimPrefix(pod, "/var/run/netns/"), strings.TrimPrefix(peer, "/var/run/netns/")
	ip(t, "-n", podName, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0", "netns", peerName)
	ip(t, "-n", podName, "addr", "add", podAddr, "dev", "eth0")
	ip(t, "-n", peerName, "addr", "add", peerAddr, "dev", "peer0")
	ip(t, "-n", podName, "link", "set", "eth0", "up")
	ip(t, "-n", peerName, "link", "set", "peer0", "up")
	gw, _, _ := strings.Cut(peerAddr, "/")
	ip(t, "-n", podName, "route", "add", "default", "via", gw)
}

// VethPair is NetNS twice and AddVeth: a pod namespace as CNI leaves it.
func VethPair(t testing.TB, podAddr, peerAddr string) (pod, peer string) {
	t.Helper()
	pod, peer = NetNS(t, "pod"), NetNS(t, "peer")
	AddVeth(t, pod, peer, podAddr, peerAddr)
	return pod, peer
}
