//go:build k8s

package k8s

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/podvm/podvm/network"
)

// portForward runs `kubectl port-forward` to the pod's port (in the
// node's namespace, where kubectl listens) and GETs path through it.
func (n *Node) portForward(pod string, port int, path string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	local := port + 10000
	cmd := n.kubectlCmd(ctx, "port-forward", "pod/"+pod, fmt.Sprintf("%d:%d", local, port))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return "", err
	}
	defer func() {
		cancel()
		_ = cmd.Wait()
	}()
	// kubectl says "Forwarding from 127.0.0.1:LOCAL -> PORT" once it listens.
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "Forwarding from") {
		return "", fmt.Errorf("kubectl port-forward: %q %v: %s", line, err, stderr.String())
	}
	go io.Copy(io.Discard, stdout)
	var page []byte
	err = network.InNamespace("/var/run/netns/"+n.ctd.NetNS, func() error {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", local), 10*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := fmt.Fprintf(c, "GET %s HTTP/1.0\r\n\r\n", path); err != nil {
			return err
		}
		page, err = io.ReadAll(c)
		return err
	})
	return string(page), err
}
