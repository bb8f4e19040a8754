package e2e

import (
	"bufio"
	"os/exec"
	"strings"
	"sync"
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
	web := c.container(pod, podConfig, "web", "sh", "-c",
		"mkdir -p /www && echo hello-"+handler+" > /www/index.html && head -c 300000 /dev/urandom > /www/big && "+
			"md5sum < /www/big > /www/big.md5 && exec httpd -f -p 127.0.0.1:9090 -h /www")
	// httpd listens on 127.0.0.1:9090 (0100007F:2382 in /proc/net/tcp,
	// state 0A) before anything is forwarded.
	waitFor(t, func() bool {
		_, err := c.run("exec", "-s", web, "grep", "-q", "0100007F:2382 00000000:0000 0A", "/proc/net/tcp")
		return err == nil
	})
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
	ready := make(chan string, 2)
	var mu sync.Mutex
	var seen strings.Builder
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			mu.Lock()
			seen.WriteString(s.Text() + "\n")
			mu.Unlock()
			if strings.Contains(s.Text(), "Forwarding from 127.0.0.1:19091") {
				ready <- ""
			}
		}
		mu.Lock()
		ready <- "exited: " + seen.String()
		mu.Unlock()
	}()
	defer func() {
		if t.Failed() {
			mu.Lock()
			t.Logf("crictl port-forward said:\n%s", seen.String())
			mu.Unlock()
		}
	}()
	select {
	case msg := <-ready:
		if msg != "" {
			t.Fatalf("crictl port-forward ended: %s", msg)
		}
	case <-time.After(time.Minute):
		t.Fatal("crictl port-forward did not start listening within a minute")
	}
	// An HTTP/1.0 GET with nc (busybox's static wget crashes on these
	// hosts); the body is what follows the headers.
	get := func(port, path, filter string) (string, error) {
		out, err := exec.Command("nsenter", "--net=/var/run/netns/"+ctd.NetNS, harness.Busybox, "sh", "-c",
			`printf 'GET /`+path+` HTTP/1.0\r\n\r\n' | nc -w 20 127.0.0.1 `+port+` | sed '1,/^\r$/d'`+filter).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	var got string
	waitFor(t, func() bool {
		got, err = get("19090", "index.html", "")
		return got == "hello-"+handler
	})
	if got != "hello-"+handler {
		t.Fatalf("index.html through port-forward: %q, %v", got, err)
	}
	sum, err := get("19090", "big", " | md5sum")
	want, werr := get("19090", "big.md5", "")
	if err != nil || werr != nil || sum == "" || sum != want {
		t.Errorf("300 KB through port-forward: md5 %q (%v), the pod's %q (%v)", sum, err, want, werr)
	}
	if got, _ := get("19091", "", ""); got != "" {
		t.Errorf("a forwarded port where nothing listens answered: %q", got)
	}
}
