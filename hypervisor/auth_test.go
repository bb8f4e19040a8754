package hypervisor

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/ttrpc"

	agentapi "github.com/podvm/podvm/api/agent/v1"
	"github.com/podvm/podvm/test/harness"
)

// TestMain lets the test binary play a second host process (see
// attack).
func TestMain(m *testing.M) {
	if mode := os.Getenv("PODVM_ATTACK"); mode != "" {
		fmt.Println(attack(mode, os.Getenv("PODVM_ATTACK_SOCKET")))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// attack is another host process that found the agent's channel: it
// connects and asks the agent for its health, with no hello or a guessed
// secret. It reports whether the agent answered.
func attack(mode, socket string) string {
	c, err := net.Dial("unix", socket)
	if err != nil {
		return "no connection: " + err.Error()
	}
	defer c.Close()
	switch mode {
	case "guessed-secret":
		guess := make([]byte, agentapi.SecretSize)
		rand.Read(guess)
		c.Write(append([]byte(agentapi.Hello), guess...))
	case "no-hello":
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	client := ttrpc.NewClient(c)
	defer client.Close()
	if _, err := agentapi.NewAgentClient(client).Health(ctx, &agentapi.HealthRequest{}); err != nil {
		return "refused: " + err.Error()
	}
	return "answered"
}

// TestAgentRefusesStrangers exposes a real guest's agent channel on a
// socket any host process can connect to (as vsock is) and plays a second
// host process against it: without the VM's secret, or with a guessed
// one, it gets no answer. The host with the secret is served.
func TestAgentRefusesStrangers(t *testing.T) {
	for _, who := range []string{"no-hello", "guessed-secret", "host"} {
		t.Run(who, func(t *testing.T) {
			cfg := testConfig(t)
			harness.WatchLeaks(t)
			socket := filepath.Join(t.TempDir(), "agent.sock")
			cfg.Ports = []string{agentapi.SecretPortName, agentapi.SerialPortName}
			cfg.listenPorts = map[string]string{agentapi.SerialPortName: socket}
			cfg.KernelParams = []string{
				agentapi.ParamTransport + "=serial", agentapi.ParamPort + "=" + agentapi.SerialPortName,
				agentapi.ParamSecretPort + "=" + agentapi.SecretPortName,
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			vm, err := Start(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer vm.Stop(context.Background(), 0)
			secret := make([]byte, agentapi.SecretSize)
			rand.Read(secret)
			sp, err := vm.Port(agentapi.SecretPortName)
			if err != nil {
				t.Fatal(err)
			}
			sp.Write(agentapi.BootRecord{Secret: secret, Entropy: make([]byte, agentapi.EntropySize), RealtimeNs: time.Now().UnixNano()}.Marshal())

			if who != "host" {
				// Another process on the host: the test binary again.
				cmd := exec.Command(os.Args[0])
				cmd.Env = append(os.Environ(), "PODVM_ATTACK="+who, "PODVM_ATTACK_SOCKET="+socket)
				out, err := cmd.Output()
				got := strings.TrimSpace(string(out))
				t.Logf("second host process, %s: %s", who, got)
				if err != nil || !strings.HasPrefix(got, "refused") {
					t.Errorf("second host process, %s: %q, %v; want refused", who, got, err)
				}
				// A peer that never says hello is refused when it goes
				// or its time is up.
				refused := func() bool { return strings.Contains(strings.Join(vm.ConsoleTail(), "\n"), "refused a connection") }
				for deadline := time.Now().Add(15 * time.Second); !refused() && time.Now().Before(deadline); {
					time.Sleep(100 * time.Millisecond)
				}
				if !refused() {
					t.Errorf("the agent did not say it refused the connection:\n%s", strings.Join(vm.ConsoleTail(), "\n"))
				}
				return
			}
			c, err := net.Dial("unix", socket)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write(append([]byte(agentapi.Hello), secret...))
			client := ttrpc.NewClient(c)
			defer client.Close()
			h, err := agentapi.NewAgentClient(client).Health(ctx, &agentapi.HealthRequest{})
			if err != nil || h.Status != agentapi.HealthResponse_SERVING {
				t.Fatalf("the host with the secret: %v, %v", h, err)
			}
		})
	}
}
