package e2e

import (
	"bufio"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/podvm/podvm/test/harness"
)

// checkPortForward plays kubectl port-forward against a pod through
// containerd's CRI streaming server: a web server that listens only on
// the pod's loopback (as containerd connects to localhost in the pod's
// network namespace) serves a page and 300 KB of random bytes, which must
// arrive whole; a forwarded port where nothing listens gives nothing.
func checkPortForward(t *testing.T, c *cri, pod, podConfig, handler string) {
	t.Helper()
	ctd := c.ctd
	c.container(pod, podConfig, "web", "sh", "-c",
		"mkdir -p /www && echo hello-"+handler+" > /www/index.html && head -c 300000 /dev/urandom > /www/big && "+
			"md5sum < /www/big > /www/big.md5 && exec httpd -f -p 127.0.0.1:9090 -h /www")
	cmd := exec.Command("nsenter", "--net=/var/run/netns/"+ctd.NetNS, harness.Crictl(),
		"--runtime-endpoint", "unix://"+ctd.Address, "port-forward", pod, "19090:9090", "19091:9091")
	cmd.Env = ctd.Env
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	ready := make(chan string, 1)
	go func() {
		var seen strings.Builder
		s := bufio.NewScanner(out)
		for s.Scan() {
			seen.WriteString(s.Text() + "\n")
			if strings.Contains(s.Text(), "Forwarding from 127.0.0.1:19091") {
				ready <- ""
			}
		}
		ready <- seen.String()
	}()
	select {
	case msg := <-ready:
		if msg != "" {
			t.Fatalf("crictl port-forward ended: %s", msg)
		}
	case <-time.After(time.Minute):
		t.Fatal("crictl port-forward did not start listening within a minute")
	}
	wget := func(path string) (string, error) {
		out, err := exec.Command("nsenter", "--net=/var/run/netns/"+ctd.NetNS, harness.Busybox, "sh", "-c",
			"wget -q -T 20 -O - http://127.0.0.1:"+path).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	var got string
	waitFor(t, func() bool {
		got, _ = wget("19090/index.html")
		return got == "hello-"+handler
	})
	if got != "hello-"+handler {
		t.Fatalf("index.html through port-forward: %q", got)
	}
	sum, err := wget("19090/big | md5sum")
	want, werr := wget("19090/big.md5")
	if err != nil || werr != nil || sum == "" || sum != want {
		t.Errorf("300 KB through port-forward: md5 %q (%v), the pod's %q (%v)", sum, err, want, werr)
	}
	if got, err := wget("19091/"); err == nil {
		t.Errorf("a forwarded port where nothing listens answered: %q", got)
	}
}
