// Package cinit starts a container's init process the short way: the agent
// binary is re-executed and, before its Go runtime starts, a constructor
// in C (cinit.c) joins the namespaces, mounts the rootfs, pivots into it,
// takes the process's credentials and waits to exec the container's
// program. libcontainer's `runc init` does the same in a second Go runtime,
// which under TCG costs most of a container's create; cinit covers the
// configurations CRI and ctr produce and leaves the rest to libcontainer.
package cinit

/*
#cgo CFLAGS: -Wall -O2
*/
import "C"

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

// Process is what cinit needs of the container's process.
type Process struct {
	Args, Env                   []string
	UID, GID                    uint32
	Groups                      []uint32
	Cwd                         string
	Capabilities                *configs.Capabilities
	Rlimits                     []configs.Rlimit
	NoNewPrivileges             bool
	ConsoleWidth, ConsoleHeight uint16
	Stdin, Stdout, Stderr       *os.File
	// ConsoleSocket, when set, receives the pty master (as with runc's
	// --console-socket) and the process gets the slave as its terminal.
	ConsoleSocket *os.File
}

// Unsupported says why cfg needs libcontainer, or nil when cinit can run it.
func Unsupported(cfg *configs.Config) error {
	if err := seccompSupported(cfg.Seccomp); err != nil {
		return err
	}
	switch {
	case len(cfg.Hooks) > 0:
		return errors.New("hooks")
	case len(cfg.UIDMappings) > 0 || len(cfg.GIDMappings) > 0:
		return errors.New("user namespace")
	case cfg.Personality != nil, cfg.Scheduler != nil, cfg.IOPriority != nil, cfg.MemoryPolicy != nil:
		return errors.New("personality, scheduler, I/O priority or memory policy")
	case cfg.NoPivotRoot:
		return errors.New("no pivot_root")
	case cfg.RootPropagation&unix.MS_SHARED != 0:
		return errors.New("shared rootfs propagation")
	case cfg.AppArmorProfile != "" || cfg.ProcessLabel != "" || cfg.MountLabel != "":
		return errors.New("security labels")
	case cfg.IntelRdt != nil, len(cfg.Routes) > 0, len(cfg.TimeOffsets) > 0:
		return errors.New("Intel RDT, routes or time offsets")
	}
	for _, n := range cfg.Networks {
		if n.Type != "loopback" {
			return fmt.Errorf("network of type %q", n.Type)
		}
	}
	for _, ns := range cfg.Namespaces {
		switch ns.Type {
		case configs.NEWNET, configs.NEWIPC, configs.NEWUTS, configs.NEWCGROUP:
		case configs.NEWPID:
		case configs.NEWNS:
			if ns.Path != "" {
				return fmt.Errorf("joining a %s namespace", ns.Type)
			}
		default:
			return fmt.Errorf("%s namespace", ns.Type)
		}
	}
	if !cfg.Namespaces.Contains(configs.NEWNS) {
		return errors.New("no mount namespace")
	}
	for _, m := range cfg.Mounts {
		if m.RecAttr != nil || m.Extensions != 0 || m.IDMapping != nil {
			return fmt.Errorf("mount %s with extended attributes", m.Destination)
		}
		d := path.Clean(m.Destination)
		if (d == "/proc" && m.Device != "proc") || strings.HasPrefix(d, "/proc/") {
			return fmt.Errorf("mount on %s", m.Destination)
		}
	}
	return nil
}

// Init is a container init: spawned and waiting for its config, then
// created and waiting for Start.
type Init struct {
	Cmd  *exec.Cmd
	sync *os.File
	// Flags are the namespaces it was cloned into.
	Flags uintptr
	// own registers the PID of a child the init forked into a joined PID
	// namespace, release hands it back.
	own     func(func() (int, error)) (int, error)
	release func(int)

	mu sync.Mutex
	// proc is the container's init: Cmd's process, or the child it forked.
	proc    *os.Process
	forked  bool
	cmdDone chan struct{}

	exited chan struct{}
	state  *os.ProcessState
	err    error
}

// SpareFlags are the namespaces of the inits spawned ahead of their
// containers: what a pod's sandbox or `ctr run` asks for, and what CRI's
// containers (which join their pod's PID, IPC and UTS namespaces) do. A
// container that shares a namespace with the agent joins the agent's
// again; one joined by path replaces the init's.
var SpareFlags = []uintptr{
	unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWNET,
	unix.CLONE_NEWNS,
}

// Flags returns the namespaces a fresh init for cfg is cloned into.
func Flags(cfg *configs.Config) uintptr {
	var flags uintptr
	for _, ns := range cfg.Namespaces {
		if ns.Path == "" && ns.Type != configs.NEWCGROUP {
			flags |= uintptr(ns.Syscall())
		}
	}
	return flags
}

// Fits says whether an init cloned with flags can become cfg's: it has
// each namespace cfg wants new, and a PID namespace only if cfg wants one
// (a PID namespace can be neither left nor, from a new one, joined).
func Fits(flags uintptr, cfg *configs.Config) bool {
	if flags&unix.CLONE_NEWNS == 0 {
		return false
	}
	for _, t := range []configs.NamespaceType{configs.NEWPID, configs.NEWNET, configs.NEWIPC, configs.NEWUTS} {
		ns := configs.Namespace{Type: t}
		isNew := cfg.Namespaces.Contains(t) && cfg.Namespaces.PathOf(t) == ""
		has := flags&uintptr(ns.Syscall()) != 0
		if isNew && !has || t == configs.NEWPID && has && !isNew {
			return false
		}
	}
	return true
}

// Spawn starts an init in new namespaces (flags), waiting for its config,
// in the cgroup directory cgroup if not nil. start wraps the process's start and registers its PID (the agent's
// reaper holds off meanwhile); release hands the PID back once the init
// has been waited for.
func Spawn(flags uintptr, cgroup *os.File, start func(func() (int, error)) (int, error), release func(pid int)) (*Init, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("cinit sync socket: %w", err)
	}
	parent, child := os.NewFile(uintptr(fds[0]), "cinit"), os.NewFile(uintptr(fds[1]), "cinit-child")
	defer child.Close()
	cmd := exec.Command("/proc/self/exe", "cinit")
	cmd.ExtraFiles = []*os.File{child}
	cmd.Env = []string{"_PODVM_CINIT=3"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: flags}
	if cgroup != nil {
		// Born in it (clone3's CLONE_INTO_CGROUP): no migration later.
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(cgroup.Fd())
	}
	i := &Init{Cmd: cmd, sync: parent, Flags: flags, own: start, release: release,
		cmdDone: make(chan struct{}), exited: make(chan struct{})}
	if _, err := start(func() (int, error) {
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		return cmd.Process.Pid, nil
	}); err != nil {
		parent.Close()
		return nil, fmt.Errorf("start container init: %w", err)
	}
	i.proc = cmd.Process
	go func() {
		state, err := cmd.Process.Wait()
		release(cmd.Process.Pid)
		i.mu.Lock()
		forked := i.forked
		i.mu.Unlock()
		close(i.cmdDone)
		if !forked {
			i.state, i.err = state, err
			close(i.exited)
		}
	}()
	return i, nil
}

// Pid is the init's PID in the agent's namespace.
func (i *Init) Pid() int { return i.Process().Pid }

// Process is the container's init.
func (i *Init) Process() *os.Process {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.proc
}

// Wait returns once the init has exited.
func (i *Init) Wait() (*os.ProcessState, error) {
	<-i.exited
	return i.state, i.err
}

// Exited is closed once the init has exited.
func (i *Init) Exited() <-chan struct{} { return i.exited }

// Create sends the init its container's config and the process's
// descriptors, and returns once it waits to exec the program. On error the
// init is killed.
func (i *Init) Create(id string, cfg *configs.Config, p *Process, timeout time.Duration) error {
	config, files, err := encode(id, cfg, p, i.Flags)
	return i.configure(config, files, err, timeout)
}

// Exec sends an init spawned into no new namespaces (and into the
// container's cgroup) the process to become in the running container id,
// whose init is initPid: it joins the init's namespaces and sets the
// process up as runc exec does, without libcontainer's second Go runtime.
// It returns once the process waits for Start; on error it is killed.
func (i *Init) Exec(id string, initPid int, cfg *configs.Config, p *Process, timeout time.Duration) error {
	if i.Flags != 0 {
		i.Kill()
		return errors.New("exec: the process was cloned into new namespaces")
	}
	config, files, err := encodeExec(id, initPid, cfg, p)
	return i.configure(config, files, err, timeout)
}

// configure sends the init its config (or, when encoding it failed, kills
// it) and waits until it is ready to exec.
func (i *Init) configure(config []byte, files []*os.File, err error, timeout time.Duration) error {
	if err != nil {
		i.Kill()
		return fmt.Errorf("container config: %w", err)
	}
	_ = i.sync.SetDeadline(time.Now().Add(timeout))
	defer i.sync.SetDeadline(time.Time{})
	if err := sendConfig(i.sync, config, files); err != nil {
		i.Kill()
		return fmt.Errorf("send container config: %w", err)
	}
	if err := i.expect('R'); err != nil {
		i.Kill()
		return err
	}
	return nil
}

// adopt takes the child an init forked into a joined PID namespace (its
// PID follows 'P'): registered as the agent's before its parent exits,
// so that no reaper takes its exit, and waited for once it is the
// agent's child.
func (i *Init) adopt(b []byte) error {
	if len(b) < 4 {
		return errors.New("container init: short PID")
	}
	pid := int(int32(binary.LittleEndian.Uint32(b)))
	if pid <= 0 {
		return fmt.Errorf("container init: PID %d", pid)
	}
	proc, err := os.FindProcess(pid)
	if err != nil {
		return fmt.Errorf("container init %d: %w", pid, err)
	}
	_, _ = i.own(func() (int, error) { return pid, nil })
	i.mu.Lock()
	i.forked, i.proc = true, proc
	i.mu.Unlock()
	if _, err := i.sync.Write([]byte{'A'}); err != nil {
		return fmt.Errorf("container init: %w", err)
	}
	<-i.cmdDone
	go func() {
		i.state, i.err = proc.Wait()
		i.release(pid)
		close(i.exited)
	}()
	return nil
}

func sendConfig(sock *os.File, config []byte, files []*os.File) error {
	var rights []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for k, f := range files {
			fds[k] = int(f.Fd())
		}
		rights = unix.UnixRights(fds...)
	}
	rc, err := sock.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	// The descriptors go with the first bytes; the rest follows.
	werr := rc.Write(func(fd uintptr) bool {
		var n int
		n, serr = unix.SendmsgN(int(fd), config[:4], rights, nil, 0)
		if serr == unix.EAGAIN {
			return false
		}
		if serr == nil && n < 4 {
			serr = io.ErrShortWrite
		}
		return true
	})
	for _, f := range files {
		runtime.KeepAlive(f)
	}
	if err := errors.Join(werr, serr); err != nil {
		return err
	}
	_, err = sock.Write(config[4:])
	return err
}

// expect reads the init's answer: want, or its error (0 wants the end of
// the stream: the exec). An init that joined a PID namespace first names
// the child that goes on in its place.
func (i *Init) expect(want byte) error {
	buf := make([]byte, 1025)
	n, err := io.ReadAtLeast(i.sync, buf, 1)
	for err == nil && buf[0] == 'P' && want == 'R' {
		if n < 5 {
			if _, err := io.ReadFull(i.sync, buf[n:5]); err != nil {
				return fmt.Errorf("container init: %w", err)
			}
			n = 5
		}
		if err := i.adopt(buf[1:5]); err != nil {
			return err
		}
		n = copy(buf, buf[5:n])
		if n == 0 {
			n, err = io.ReadAtLeast(i.sync, buf, 1)
		}
	}
	switch {
	case err == io.EOF && want == 0:
		return nil
	case err != nil:
		return fmt.Errorf("container init: %w", err)
	case buf[0] == want && want != 0:
		return nil
	case buf[0] == 'E':
		// It writes its whole error before exiting.
		m, _ := io.ReadFull(i.sync, buf[n:])
		return errors.New(strings.ToValidUTF8(string(buf[1:n+m]), "?"))
	default:
		return fmt.Errorf("container init answered %q", buf[:n])
	}
}

// Kill ends the init and releases it.
func (i *Init) Kill() {
	_ = i.Cmd.Process.Kill()
	_ = i.Process().Kill()
	<-i.cmdDone
	i.mu.Lock()
	forked := i.forked
	i.mu.Unlock()
	if forked {
		<-i.exited
	}
	i.sync.Close()
}

// Start lets the init exec the container's program and returns once it
// has (or could not: then the error is the init's own), or by passes.
func (i *Init) Start(by time.Time) error {
	defer i.sync.Close()
	_ = i.sync.SetDeadline(by)
	if _, err := i.sync.Write([]byte{'G'}); err != nil {
		return fmt.Errorf("start container init: %w", err)
	}
	return i.expect(0)
}

// Close releases the init's sync socket without starting it: an init
// waiting for its config or for Start then exits.
func (i *Init) Close() { i.sync.Close() }
