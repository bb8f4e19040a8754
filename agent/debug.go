package agent

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"

	"github.com/containerd/console"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	agentapi "github.com/podvm/podvm/api/agent/v1"
)

// appletDir holds busybox's applet links for console shells.
const appletDir = "/run/podvm/debug/bin"

// debugService implements agentapi.DebugService: shells in the guest,
// outside every container, whose terminals the Stdio service carries.
type debugService struct {
	enabled  bool
	reaper   *reaper
	storages *storages

	mu       sync.Mutex
	n        int
	consoles map[string]*process
}

func newDebugService(enabled bool, r *reaper, cs *containerService) *debugService {
	d := &debugService{enabled: enabled, reaper: r, storages: &cs.storages, consoles: map[string]*process{}}
	cs.consoles = d.console
	return d
}

// used reports whether a console was ever started: what its shell
// started may outlive it, outside any container.
func (d *debugService) used() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n > 0
}

func (d *debugService) console(id string) (*process, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p, ok := d.consoles[id]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "debug console %s not found", id)
	}
	return p, nil
}

func (d *debugService) StartConsole(ctx context.Context, req *agentapi.StartConsoleRequest) (*agentapi.StartConsoleResponse, error) {
	if !d.enabled {
		return nil, status.Errorf(codes.PermissionDenied, "the debug console is off in this guest: set debug_console = true in podvm's configuration and recreate the pod")
	}
	for _, st := range req.Storages {
		if err := d.storages.mount(st); err != nil {
			return nil, status.Errorf(codes.Internal, "%v", err)
		}
	}
	if _, err := os.Stat(req.Busybox); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "busybox for the console: %v", err)
	}
	if err := os.MkdirAll(appletDir, 0o755); err != nil {
		return nil, status.Errorf(codes.Internal, "console applets: %v", err)
	}
	if out, err := exec.Command(req.Busybox, "--install", "-s", appletDir).CombinedOutput(); err != nil {
		return nil, status.Errorf(codes.Internal, "busybox --install: %v: %s", err, out)
	}
	child, pio, err := consoleIO(req)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "console: %v", err)
	}
	term := req.Term
	if term == "" {
		term = "linux"
	}
	cmd := &exec.Cmd{
		Path:   req.Busybox,
		Args:   []string{"sh"},
		Dir:    "/",
		Env:    []string{"PATH=" + appletDir + ":/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "TERM=" + term, "PS1=podvm# "},
		Stdin:  child[0],
		Stdout: child[1],
		Stderr: child[1],
		// Its own session (with the pty as controlling terminal, if
		// any: ^C reaches the shell's foreground job), so that
		// CloseConsole can end the whole session.
		SysProcAttr: &syscall.SysProcAttr{Setsid: true, Setctty: req.Terminal, Ctty: 0},
	}
	pid, err := d.reaper.Start(func() (int, error) {
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		return cmd.Process.Pid, nil
	})
	for _, f := range child {
		f.Close()
	}
	if err != nil {
		pio.close()
		return nil, status.Errorf(codes.Internal, "start the console shell: %v", err)
	}
	p := &process{pid: pid, io: pio, exited: make(chan struct{})}
	go func() {
		defer recoverPanic("console wait")
		_ = cmd.Wait()
		d.reaper.Release(pid)
		p.status = exitStatus(cmd.ProcessState)
		close(p.exited)
	}()
	d.mu.Lock()
	d.n++
	id := strconv.Itoa(d.n)
	d.consoles[id] = p
	d.mu.Unlock()
	logf(levelInfo, "debug console %s: shell pid %d (%s)", id, pid, filepath.Base(req.Busybox))
	return &agentapi.StartConsoleResponse{Id: id}, nil
}

func (d *debugService) WaitConsole(ctx context.Context, req *agentapi.ConsoleRequest) (*agentapi.WaitConsoleResponse, error) {
	p, err := d.console(req.Id)
	if err != nil {
		return nil, err
	}
	pctx, cancel := pollContext(ctx)
	defer cancel()
	select {
	case <-p.exited:
		return &agentapi.WaitConsoleResponse{ExitStatus: uint32(p.status)}, nil
	case <-pctx.Done():
		return nil, notYet(pctx)
	}
}

func (d *debugService) CloseConsole(ctx context.Context, req *agentapi.ConsoleRequest) (*emptypb.Empty, error) {
	p, err := d.console(req.Id)
	if err != nil {
		return nil, err
	}
	// The shell's session: whatever it started in the background too.
	_ = unix.Kill(-p.pid, unix.SIGKILL)
	select {
	case <-p.exited:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	p.io.close()
	d.mu.Lock()
	delete(d.consoles, req.Id)
	d.mu.Unlock()
	logf(levelInfo, "debug console %s closed", req.Id)
	return &emptypb.Empty{}, nil
}

// consoleIO makes the shell's stdio: a pty, or pipes. child is the
// shell's stdin and stdout (also its stderr), closed once it has started.
func consoleIO(req *agentapi.StartConsoleRequest) (child [2]*os.File, pio *processIO, err error) {
	if !req.Terminal {
		inR, inW, err := os.Pipe()
		if err != nil {
			return child, nil, err
		}
		outR, outW, err := os.Pipe()
		if err != nil {
			inR.Close()
			inW.Close()
			return child, nil, err
		}
		// os.Pipe's ends are non-blocking already: the runtime's
		// poller serves them (see outputPort.push).
		return [2]*os.File{inR, outW}, &processIO{stdin: inW, stdout: outR}, nil
	}
	pty, slavePath, err := console.NewPty()
	if err != nil {
		return child, nil, err
	}
	defer pty.Close()
	if req.Width > 0 && req.Height > 0 {
		_ = pty.Resize(console.WinSize{Width: uint16(req.Width), Height: uint16(req.Height)})
	}
	slave, err := os.OpenFile(slavePath, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return child, nil, err
	}
	// The master, duplicated and non-blocking so that reads can have
	// deadlines: console's own file is blocking.
	fd, err := unix.FcntlInt(pty.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err == nil {
		if err = unix.SetNonblock(fd, true); err != nil {
			unix.Close(fd)
		}
	}
	if err != nil {
		slave.Close()
		return child, nil, err
	}
	master := os.NewFile(uintptr(fd), "debug-console")
	return [2]*os.File{slave, slave}, &processIO{terminal: true, stdin: master, stdout: master}, nil
}

// exitStatus is a process's status as runc reports it: 128+signal when
// killed.
func exitStatus(ps *os.ProcessState) int {
	if ps == nil {
		return 255
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}
