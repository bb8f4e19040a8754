package e2e

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/console"

	"github.com/podvm/podvm/debugconsole"
	"github.com/podvm/podvm/test/harness"
)

// TestConsole opens the debug console of a VM whose configuration allows
// it (through the runtime's ConfigPath, as a RuntimeClass handler would),
// runs commands in the guest, and checks that closing it, normally, by end
// of input or by killing the client, leaves no shell in the guest; a VM
// without the console refuses, saying how to turn it on.
func TestConsole(t *testing.T) {
	harness.NeedRoot(t)
	if testing.Short() {
		t.Skip("skipped in -short mode: boots VMs")
	}
	_, err := os.Stat("/bin/busybox")
	harness.Need(t, err == nil, "/bin/busybox is missing (make deps installs busybox-static)")
	harness.WatchLeaks(t)
	ctd := harness.StartContainerd(t, "")
	ctd.ImportBusybox(t)
	s := &suite{t: t, ctd: ctd}
	stateDir := filepath.Join(ctd.Dir, "podvm")

	withConsole := filepath.Join(t.TempDir(), "console.toml")
	if err := os.WriteFile(withConsole, []byte("debug_console = true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	id := s.id(podvm)
	if r := s.ctr(nil, "run", "-d", "--runtime", podvm, "--runtime-config-path", withConsole, harness.BusyboxImage, id, "sleep", "100000"); r.code != 0 {
		t.Fatalf("ctr run with the console on: %+v", r)
	}
	off := s.id(podvm)
	if r := s.ctr(nil, "run", "-d", "--runtime", podvm, harness.BusyboxImage, off, "sleep", "100000"); r.code != 0 {
		t.Fatalf("ctr run: %+v", r)
	}
	defer func() {
		for _, c := range []string{id, off} {
			s.ctr(nil, "task", "kill", "-s", "KILL", c)
		}
		waitFor(t, func() bool { return !strings.Contains(s.ctr(nil, "task", "ls").stdout, "RUNNING") })
		for _, c := range []string{id, off} {
			s.ctr(nil, "task", "delete", c)
			s.ctr(nil, "container", "delete", c)
		}
		if _, err := os.Stat(filepath.Join(stateDir, "sandboxes", id)); !os.IsNotExist(err) {
			t.Errorf("sandbox directory (console socket, staged busybox) left: %v", err)
		}
	}()

	run := func(ctx context.Context, sandbox, input string) (string, string, int) {
		t.Helper()
		cmd := exec.CommandContext(ctx, harness.ShimBinary(), "console", "--state-dir", stateDir, sandbox)
		cmd.Stdin = strings.NewReader(input)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		return out.String(), errOut.String(), exitCode(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// A shell in the guest, outside the containers: it sees the share
	// that holds every container's rootfs, and its exit status is the
	// command's.
	out, errOut, code := run(ctx, id, "echo hello-$((6*7))\nls /run/podvm/shared\nexit 7\n")
	if code != 7 || !strings.Contains(out, "hello-42") || !strings.Contains(out, id) {
		t.Fatalf("console: exit %d, want 7 with hello-42 and the container's share %s\nstdout: %q\nstderr: %s", code, id, out, errOut)
	}
	// The end of input ends the shell, as in a terminal's ^D.
	if out, errOut, code = run(ctx, id, "echo second-$((1+1))\n"); code != 0 || !strings.Contains(out, "second-2") {
		t.Fatalf("console ended by EOF: exit %d\nstdout: %q\nstderr: %s", code, out, errOut)
	}

	// On a terminal: raw, sized as the client's and resized with it.
	consoleOnTerminal(ctx, t, stateDir, id)

	// A client killed mid-session: the shim kills the shell's session in
	// the guest, background jobs included.
	cmd := exec.CommandContext(ctx, harness.ShimBinary(), "console", "--state-dir", stateDir, id)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var killedOut lockedBuffer
	cmd.Stdout = &killedOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	io.WriteString(stdin, "sleep 4242 &\necho started-$((2*2))\n")
	waitFor(t, func() bool { return strings.Contains(killedOut.String(), "started-4") })
	cmd.Process.Kill()
	cmd.Wait()
	stdin.Close()
	waitFor(t, func() bool {
		out, _, _ := run(ctx, id, "ps\n")
		return strings.Contains(out, "PID") && !strings.Contains(out, "sleep 4242")
	})

	// The console is off unless the configuration turns it on.
	_, errOut, code = run(ctx, off, "true\n")
	if code != 1 || !strings.Contains(errOut, "debug console is off") || !strings.Contains(errOut, "debug_console = true") {
		t.Errorf("console of a VM without it: exit %d, stderr %q", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(stateDir, "sandboxes", off, debugconsole.SocketName)); !os.IsNotExist(err) {
		t.Errorf("console socket of a VM without the console: %v", err)
	}
	_, errOut, code = run(ctx, "no-such-sandbox", "")
	if code != 1 || !strings.Contains(errOut, `no sandbox "no-such-sandbox"`) {
		t.Errorf("console of a missing sandbox: exit %d, stderr %q", code, errOut)
	}
}

// consoleOnTerminal runs the console client on a pty, as an operator's
// shell would, and checks that the guest's terminal follows its size.
func consoleOnTerminal(ctx context.Context, t *testing.T, stateDir, id string) {
	t.Helper()
	pty, slavePath, err := console.NewPty()
	if err != nil {
		t.Fatal(err)
	}
	defer pty.Close()
	if err := pty.Resize(console.WinSize{Width: 100, Height: 30}); err != nil {
		t.Fatal(err)
	}
	slave, err := os.OpenFile(slavePath, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, harness.ShimBinary(), "console", "--state-dir", stateDir, id)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.Env = append(os.Environ(), "TERM=xterm")
	// The pty is the client's controlling terminal, so that a resize
	// sends it SIGWINCH.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	var out lockedBuffer
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		io.Copy(&out, pty)
	}()
	io.WriteString(pty, "stty size; echo term=$TERM\r")
	waitFor(t, func() bool {
		return strings.Contains(out.String(), "30 100") && strings.Contains(out.String(), "term=xterm")
	})
	if err := pty.Resize(console.WinSize{Width: 120, Height: 40}); err != nil {
		t.Fatal(err)
	}
	// The resize travels as a signal and then a frame: ask until the
	// guest sees it.
	waitFor(t, func() bool {
		io.WriteString(pty, "stty size\r")
		time.Sleep(200 * time.Millisecond)
		return strings.Contains(out.String(), "40 120")
	})
	io.WriteString(pty, "exit 3\r")
	err = cmd.Wait()
	<-copied
	if code := exitCode(err); code != 3 {
		t.Errorf("console on a terminal: exit %d, want 3\noutput: %q", code, out.String())
	}
}

// lockedBuffer is written by a command's copying goroutine while the test
// reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
