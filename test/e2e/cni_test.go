package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/podvm/podvm/test/harness"
)

// ctrCNI runs ctr inside the test containerd's network namespace and a
// private mount namespace where the CNI locations ctr hard-codes
// (/etc/cni/net.d, /opt/cni/bin, /var/lib/cni) are the test's own: the
// bridge CNI makes lives in the test's namespace, its IP allocations in the
// test's directory.
func (s *suite) ctrCNI(t *testing.T, dir string, args ...string) result {
	t.Helper()
	var quoted []string
	for _, a := range append([]string{harness.CtrBin(), "--address", s.ctd.Address}, args...) {
		quoted = append(quoted, "'"+strings.ReplaceAll(a, "'", `'\''`)+"'")
	}
	script := fmt.Sprintf("set -e; mount --bind %s/net.d /etc/cni/net.d; mount --bind /usr/lib/cni /opt/cni/bin; mount --bind %s/state /var/lib/cni; exec %s",
		dir, dir, strings.Join(quoted, " "))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", "--net=/var/run/netns/"+s.ctd.NetNS, "unshare", "-m", "--propagation", "private", "sh", "-c", script)
	cmd.Env = s.ctd.Env
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return result{out.String(), errb.String(), exitCode(err)}
}

// mkdirs makes the directories a bind mount needs and removes, afterwards,
// those it made.
func mkdirs(t *testing.T, dirs ...string) {
	for _, d := range dirs {
		if _, err := os.Stat(d); err == nil {
			continue
		}
		// Remove the outermost directory made for d.
		top := d
		for p := filepath.Dir(d); p != "/"; p = filepath.Dir(p) {
			if _, err := os.Stat(p); err == nil {
				break
			}
			top = p
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(top) })
	}
}

var inetRE = regexp.MustCompile(`inet (10\.77\.0\.\d+)/24`)

func TestCtrCNI(t *testing.T) {
	s := newSuite(t)
	mkdirs(t, "/etc/cni/net.d", "/opt/cni/bin", "/var/lib/cni")
	dir := t.TempDir()
	for _, d := range []string{"net.d", "state"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	conf := `{"cniVersion":"0.4.0","name":"podvm-test","plugins":[{"type":"bridge","bridge":"podvmtest0","isGateway":true,"ipMasq":false,
"ipam":{"type":"host-local","ranges":[[{"subnet":"10.77.0.0/24"}]],"routes":[{"dst":"0.0.0.0/0"}]}}]}`
	if err := os.WriteFile(filepath.Join(dir, "net.d", "10-podvm-test.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, rt := range runtimes {
		id := s.id(rt)
		r := s.ctrCNI(t, dir, "run", "--cni", "--runtime", rt, "--rm", harness.BusyboxImage, id, "sh", "-c", "ip -4 addr show eth0; ip route")
		m := inetRE.FindStringSubmatch(r.stdout)
		if r.code != 0 || m == nil || !strings.Contains(r.stdout, "default via 10.77.0.1") {
			t.Errorf("%s: ctr run --cni: %+v", short(rt), r)
			continue
		}
		t.Logf("%s: got %s", short(rt), m[1])
	}
	// A server in a podvm container answers a client in the test's
	// namespace, through the CNI bridge.
	id := s.id(podvm)
	r := s.ctrCNI(t, dir, "run", "--cni", "--runtime", podvm, "-d", harness.BusyboxImage, id, "sh", "-c", "ip -4 addr show eth0 > /tmp/addr; nc -ll -p 8080 -e echo served-by-podvm")
	if r.code != 0 {
		t.Fatalf("run -d: %+v", r)
	}
	defer s.ctrCNI(t, dir, "container", "delete", id)
	defer s.ctrCNI(t, dir, "task", "delete", "-f", id)
	var ip string
	waitFor(t, func() bool {
		m := inetRE.FindStringSubmatch(s.ctr(nil, "task", "exec", "--exec-id", "a", id, "cat", "/tmp/addr").stdout)
		if m != nil {
			ip = m[1]
		}
		return m != nil
	})
	var got []byte
	waitFor(t, func() bool {
		got, _ = exec.Command("nsenter", "--net=/var/run/netns/"+s.ctd.NetNS, harness.Busybox, "nc", "-w", "3", ip, "8080").CombinedOutput()
		return strings.Contains(string(got), "served-by-podvm")
	})
	// The task's PID is QEMU's, whose network namespace is the one CNI
	// configured: podvm's persistent namespace for the pod.
	var pid int
	for _, line := range strings.Split(s.ctr(nil, "task", "ls").stdout, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == id {
			fmt.Sscan(f[1], &pid)
		}
	}
	got2, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
	var st unix.Stat_t
	if err := unix.Stat("/var/run/netns/podvm-"+id, &st); err != nil || got2 != fmt.Sprintf("net:[%d]", st.Ino) {
		t.Errorf("task pid %d is in %s, not the pod's namespace (%v)", pid, got2, err)
	}
}
