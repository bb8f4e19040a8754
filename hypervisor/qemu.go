package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// VM is one running QEMU process.
type VM struct {
	cfg     Config
	pid     int
	proc    *os.Process
	started time.Time
	qmp     *QMP

	mu         sync.Mutex
	ports      map[string]net.Conn // host ends of named serial ports, each handed out once
	vsockCID   uint32
	hotplugged int // NICs plugged in after start

	res resources

	args []string

	console *tail
	stderr  *tail
	closers []io.Closer // host-side files to close once QEMU is gone
	// daemons serve the shares over virtio-fs; they live as long as QEMU.
	daemons []*virtiofsd

	// exited is closed as soon as QEMU is reaped (its PID may be reused
	// from then on); done once its daemons and output have ended too.
	exited  chan struct{}
	done    chan struct{}
	exitErr error // how QEMU ended; valid once done is closed
	killed  bool  // Stop or Kill ended it, so an exit by signal is expected
}

// Start starts QEMU for cfg and returns once QEMU answers QMP. The guest is
// not waited for. A failure leaves no process behind.
func Start(ctx context.Context, cfg Config) (*VM, error) {
	if cfg.ID == "" {
		cfg.ID = "podvm"
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("start VM %s: %w", cfg.ID, err)
	}
	vm := &VM{cfg: cfg, console: newTail(40), stderr: newTail(20), exited: make(chan struct{}), done: make(chan struct{}), ports: map[string]net.Conn{}}
	vm.res.cpus, vm.res.memoryMiB = cfg.CPUs, cfg.MemoryMiB
	if err := vm.start(ctx); err != nil {
		return nil, fmt.Errorf("start VM %s: %w", cfg.ID, err)
	}
	return vm, nil
}

func (vm *VM) start(ctx context.Context) (err error) {
	// Everything QEMU talks over is a socket pair made here and inherited,
	// never a path: nothing to race for at start, nothing left on disk.
	var guestEnds []*os.File
	defer func() {
		for _, f := range guestEnds {
			f.Close()
		}
		if err != nil {
			vm.closeHostEnds()
			for _, d := range vm.daemons {
				d.listener.Close()
			}
		}
	}()
	pair := func() (host net.Conn, guest *os.File, err error) {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, nil, fmt.Errorf("socketpair: %w", err)
		}
		hf := os.NewFile(uintptr(fds[0]), "host")
		defer hf.Close()
		host, err = net.FileConn(hf)
		if err != nil {
			unix.Close(fds[1])
			return nil, nil, err
		}
		vm.closers = append(vm.closers, host)
		return host, os.NewFile(uintptr(fds[1]), "guest"), nil
	}
	f := fds{qmp: 3, console: 4}
	qmpHost, qmpGuest, err := pair()
	if err != nil {
		return err
	}
	guestEnds = append(guestEnds, qmpGuest)
	consoleHost, consoleGuest, err := pair()
	if err != nil {
		return err
	}
	guestEnds = append(guestEnds, consoleGuest)
	if vm.cfg.Vsock {
		vhost, cid, err := openVhostVsock()
		if err != nil {
			return err
		}
		f.vhostVsock = 3 + len(guestEnds)
		guestEnds = append(guestEnds, vhost)
		f.vsockCID, vm.vsockCID = cid, cid
	}
	for _, name := range vm.cfg.Ports {
		if _, ok := vm.cfg.listenPorts[name]; ok {
			f.ports = append(f.ports, -1)
			continue
		}
		host, guest, err := pair()
		if err != nil {
			return err
		}
		f.ports = append(f.ports, 3+len(guestEnds))
		guestEnds = append(guestEnds, guest)
		vm.ports[name] = host
	}

	if vm.cfg.virtioFS() {
		for i, sh := range vm.cfg.Shares {
			d, qemuEnd, err := newVirtiofsd(&vm.cfg, i, sh)
			if err != nil {
				return err
			}
			vm.daemons = append(vm.daemons, d)
			f.virtiofs = append(f.virtiofs, 3+len(guestEnds))
			guestEnds = append(guestEnds, qemuEnd)
		}
	}
	next := 3 + len(guestEnds)
	for _, n := range vm.cfg.NICs {
		// After the other inherited fds, in order.
		f.nics = append(f.nics, next)
		if n.File != nil {
			next++
		}
	}
	a, err := args(&vm.cfg, f)
	if err != nil {
		return err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return err
	}
	guestEnds = append(guestEnds, outW)
	if vm.cfg.Accel == TCG {
		// Linux has had it since 3.15 (podvm needs 5.9), and it is only
		// memory: the VM works the same with huge pages.
		_ = noHugePages()
	}
	cmd := exec.Command(vm.cfg.QEMU, a...)
	vm.args = cmd.Args
	// A copy: appending to a slice of guestEnds would overwrite outW.
	cmd.ExtraFiles = append([]*os.File{}, guestEnds[:len(guestEnds)-1]...)
	for _, n := range vm.cfg.NICs {
		if n.File != nil {
			cmd.ExtraFiles = append(cmd.ExtraFiles, n.File)
		}
	}
	cmd.Stdout, cmd.Stderr = outW, outW
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// QEMU dies with whoever started it: a killed shim must not leave a
		// VM running. Its own process group keeps a terminal's ^C from
		// reaching it before the shim stops it properly.
		Pdeathsig: syscall.SIGKILL,
		Setpgid:   true,
	}
	err = vm.run(cmd, outW)
	// QEMU has its copies now; ours would keep the output pipe from ever
	// reaching EOF.
	for _, f := range guestEnds {
		f.Close()
	}
	guestEnds = nil
	if err != nil {
		outR.Close()
		return fmt.Errorf("exec %s: %w", vm.cfg.QEMU, err)
	}
	go func() {
		vm.stderr.follow(outR, vm.cfg.Stderr)
		// Closed here, not left to the garbage collector: until then
		// the shim would hold a pipe per VM it ever ran.
		outR.Close()
	}()
	go vm.console.follow(consoleHost, vm.cfg.Console)

	q, err := vm.connectQMP(ctx, qmpHost)
	if err != nil {
		vm.Kill()
		<-vm.done
		return err
	}
	vm.qmp = q
	vm.closers = append(vm.closers, q)
	return nil
}

// run starts QEMU (after its virtio-fs daemons, whose output also goes to
// out) on a goroutine locked to its OS thread, which stays until QEMU and
// the daemons exit: Pdeathsig fires when the starting *thread* ends, so the
// thread must live as long as the processes. QEMU inherits the thread's
// network namespace: the thread enters the pod's and is never given back to
// the runtime (it ends with the goroutine).
func (vm *VM) run(cmd *exec.Cmd, out *os.File) error {
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if vm.cfg.NetNS == "" {
			defer runtime.UnlockOSThread()
		} else if err := enterNetNS(vm.cfg.NetNS); err != nil {
			started <- err
			return
		}
		vm.started = time.Now()
		// The daemons exit once QEMU's end of their sockets closes (the
		// caller closes its copy when run returns); their output shares
		// QEMU's pipe, which ends when they have.
		waitDaemons := func() {
			for _, d := range vm.daemons {
				d.wait()
			}
		}
		for _, d := range vm.daemons {
			if err := d.start(out); err != nil {
				started <- err
				waitDaemons()
				return
			}
		}
		if err := cmd.Start(); err != nil {
			started <- err
			waitDaemons()
			return
		}
		vm.pid, vm.proc = cmd.Process.Pid, cmd.Process
		started <- nil
		for _, d := range vm.daemons {
			go vm.watchDaemon(d)
		}
		err := cmd.Wait()
		close(vm.exited)
		waitDaemons()
		// Output readers end when QEMU's copy of the pipe closes.
		<-vm.stderr.done
		vm.mu.Lock()
		vm.exitErr = vm.describeExit(cmd, err)
		vm.mu.Unlock()
		vm.closeHostEnds()
		close(vm.done)
	}()
	return <-started
}

func (vm *VM) describeExit(cmd *exec.Cmd, err error) error {
	st, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	switch {
	case err == nil:
		return nil
	case ok && st.Signaled():
		return &ExitError{Signal: st.Signal(), Stderr: vm.stderr.Lines()}
	case ok && st.Exited():
		return &ExitError{Code: st.ExitStatus(), Stderr: vm.stderr.Lines()}
	default:
		return fmt.Errorf("wait for qemu: %w", err)
	}
}

func (vm *VM) connectQMP(ctx context.Context, conn net.Conn) (*QMP, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-vm.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	q, err := NewQMP(ctx, conn)
	if err == nil {
		return q, nil
	}
	// The usual cause of a failed greeting is QEMU refusing its command
	// line; its exit and stderr say why, so give it a moment to exit.
	select {
	case <-vm.done:
		if exit := vm.Err(); exit != nil {
			return nil, fmt.Errorf("qemu failed to start: %w", exit)
		}
		return nil, errors.New("qemu exited during start")
	case <-time.After(2 * time.Second):
		return nil, err
	}
}

func (vm *VM) closeHostEnds() {
	vm.mu.Lock()
	cs := vm.closers
	vm.closers = nil
	vm.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
}

// ExitError says how QEMU ended, with its last words.
type ExitError struct {
	Code   int
	Signal syscall.Signal
	Stderr []string
}

func (e *ExitError) Error() string {
	what := fmt.Sprintf("qemu exited with status %d", e.Code)
	if e.Signal != 0 {
		what = fmt.Sprintf("qemu killed by signal %d (%v)", int(e.Signal), e.Signal)
	}
	if n := len(e.Stderr); n > 0 {
		// QEMU's last line is usually the reason; the rest is context.
		what += ": " + e.Stderr[n-1]
		return what + formatTail("qemu", e.Stderr[:n-1])
	}
	return what
}

// CommandLine is QEMU's argv.
func (vm *VM) CommandLine() []string { return vm.args }

// PID is QEMU's process ID.
func (vm *VM) PID() int { return vm.pid }

// Started is when QEMU was executed.
func (vm *VM) Started() time.Time { return vm.started }

// QMP is the VM's QMP connection.
func (vm *VM) QMP() *QMP { return vm.qmp }

// Done is closed when QEMU has exited and been reaped.
func (vm *VM) Done() <-chan struct{} { return vm.done }

// Err returns how QEMU exited: nil for a clean exit (the guest powered
// off), an *ExitError otherwise. It must only be called after Done.
func (vm *VM) Err() error {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.exitErr
}

// Wait blocks until QEMU exits or ctx ends.
func (vm *VM) Wait(ctx context.Context) error {
	select {
	case <-vm.done:
		return vm.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ConsoleTail returns the last lines the guest wrote to its console.
func (vm *VM) ConsoleTail() []string { return vm.console.Lines() }

// Kill sends SIGKILL to QEMU. It is safe to call at any time.
func (vm *VM) Kill() {
	vm.mu.Lock()
	vm.killed = true
	vm.mu.Unlock()
	select {
	case <-vm.exited:
	default:
		// Through the process (a pidfd), never a bare PID: one reaped
		// meanwhile may be another process's now.
		_ = vm.proc.Signal(syscall.SIGKILL)
	}
}

// Stop ends QEMU and waits until it is reaped. It first gives the guest
// grace to power off by itself (the caller has asked its agent to), then
// asks QEMU to quit over QMP, then kills it. Calling it again, or after QEMU
// exited, is harmless.
func (vm *VM) Stop(ctx context.Context, grace time.Duration) error {
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-vm.done:
		return nil
	case <-timer.C:
	case <-ctx.Done():
	}
	qctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	vm.mu.Lock()
	vm.killed = true
	vm.mu.Unlock()
	if err := vm.qmp.Quit(qctx); err == nil {
		select {
		case <-vm.done:
			return nil
		case <-time.After(2 * time.Second):
		}
	}
	vm.Kill()
	select {
	case <-vm.done:
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("stop VM %s: qemu (pid %d) did not exit after SIGKILL", vm.cfg.ID, vm.pid)
	}
}

// Port returns the host end of the named serial port. It can be taken
// once; it closes when QEMU exits.
func (vm *VM) Port(name string) (net.Conn, error) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	c, ok := vm.ports[name]
	if !ok {
		return nil, fmt.Errorf("VM %s has no serial port %q, or it was taken", vm.cfg.ID, name)
	}
	delete(vm.ports, name)
	return c, nil
}

// DialVsock connects to a vsock port of the guest, retrying while the guest
// boots, until ctx ends or QEMU exits.
func (vm *VM) DialVsock(ctx context.Context, port uint32) (net.Conn, error) {
	if !vm.cfg.Vsock {
		return nil, fmt.Errorf("VM %s has no vsock device", vm.cfg.ID)
	}
	return dialVsock(ctx, vm.vsockCID, port, vm.done)
}

// enterNetNS moves the calling thread into the network namespace at path.
func enterNetNS(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open network namespace: %w", err)
	}
	defer f.Close()
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter network namespace %s: %w", path, err)
	}
	return nil
}
