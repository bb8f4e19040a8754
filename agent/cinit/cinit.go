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
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/moby/sys/capability"
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

// Record tags; cinit.c has the same.
const (
	tagRoot        = 'r'
	tagJoin        = 'n'
	tagMount       = 'm'
	tagDevice      = 'd'
	tagMask        = 'M'
	tagReadonly    = 'R'
	tagHostname    = 'h'
	tagDomain      = 'D'
	tagSysctl      = 's'
	tagRlimit      = 'l'
	tagCaps        = 'c'
	tagUser        = 'u'
	tagCwd         = 'w'
	tagEnv         = 'e'
	tagArg         = 'a'
	tagNoNewPrivs  = 'N'
	tagReadonlyFS  = 'o'
	tagPropagation = 'p'
	tagUmask       = 'U'
	tagTerminal    = 't'
	tagKeyring     = 'k'
	tagLoopback    = 'L'
	tagSetupDev    = 'v'
	tagFiles       = 'f'
	tagNewCgroup   = 'C'
	tagSeccomp     = 'S'
	tagEnd         = 'Z'
)

type encoder struct{ b []byte }

func (e *encoder) add(tag byte, fields ...string) error {
	var n int
	for _, f := range fields {
		if strings.IndexByte(f, 0) >= 0 {
			return fmt.Errorf("NUL byte in %q", f)
		}
		n += len(f) + 1
	}
	e.b = append(e.b, tag)
	e.b = binary.LittleEndian.AppendUint32(e.b, uint32(n))
	for _, f := range fields {
		e.b = append(append(e.b, f...), 0)
	}
	return nil
}

func u64(v uint64) string { return strconv.FormatUint(v, 10) }

// agentNamespaces are the namespaces an init may have been cloned into
// that a container can instead share with the agent.
var agentNamespaces = []configs.NamespaceType{configs.NEWNET, configs.NEWIPC, configs.NEWUTS}

// encode writes the records cinit.c reads, for an init cloned into the
// namespaces flags, and returns the descriptors that go with them.
func encode(id string, cfg *configs.Config, p *Process, flags uintptr) ([]byte, []*os.File, error) {
	e := &encoder{}
	add := e.add
	errs := []error{add(tagRoot, cfg.Rootfs)}
	if !cfg.NoNewKeyring {
		errs = append(errs, add(tagKeyring, id))
	}
	for _, ns := range cfg.Namespaces {
		switch {
		case ns.Path != "":
			errs = append(errs, add(tagJoin, string(ns.Type), ns.Path))
		case ns.Type == configs.NEWCGROUP:
			errs = append(errs, add(tagNewCgroup, ""))
		}
	}
	for _, t := range agentNamespaces {
		ns := configs.Namespace{Type: t}
		if flags&uintptr(ns.Syscall()) != 0 && !cfg.Namespaces.Contains(t) {
			errs = append(errs, add(tagJoin, string(t), ns.GetPath(os.Getpid())))
		}
	}
	if len(cfg.Networks) > 0 {
		errs = append(errs, add(tagLoopback, ""))
	}
	if cfg.RootPropagation != 0 {
		errs = append(errs, add(tagPropagation, u64(uint64(cfg.RootPropagation))))
	}
	setupDev := true
	for _, m := range cfg.Mounts {
		var prop int
		for _, f := range m.PropagationFlags {
			prop |= f
		}
		if m.IsBind() && path.Clean(m.Destination) == "/dev" {
			setupDev = false
		}
		errs = append(errs, add(tagMount, m.Source, m.Destination, m.Device,
			u64(uint64(m.Flags)), u64(uint64(prop)), m.Data, u64(uint64(m.ClearedFlags))))
	}
	if setupDev {
		errs = append(errs, add(tagSetupDev, ""))
		for _, d := range cfg.Devices {
			errs = append(errs, add(tagDevice, d.Path, string(rune(d.Type)),
				strconv.FormatInt(d.Major, 10), strconv.FormatInt(d.Minor, 10),
				u64(uint64(d.FileMode)), u64(uint64(d.Uid)), u64(uint64(d.Gid))))
		}
	}
	for _, m := range cfg.MaskPaths {
		errs = append(errs, add(tagMask, m))
	}
	for _, r := range cfg.ReadonlyPaths {
		errs = append(errs, add(tagReadonly, r))
	}
	hostname := cfg.Hostname
	if hostname == "" && cfg.Namespaces.Contains(configs.NEWUTS) && cfg.Namespaces.PathOf(configs.NEWUTS) == "" {
		// A new UTS namespace starts with the guest's name, as under
		// runc; an init spawned earlier holds an older copy.
		hostname, _ = os.Hostname()
	}
	if hostname != "" {
		errs = append(errs, add(tagHostname, hostname))
	}
	if cfg.Domainname != "" {
		errs = append(errs, add(tagDomain, cfg.Domainname))
	}
	for k, v := range cfg.Sysctl {
		errs = append(errs, add(tagSysctl, k, v))
	}
	if cfg.Readonlyfs {
		errs = append(errs, add(tagReadonlyFS, ""))
	}
	if cfg.Umask != nil {
		errs = append(errs, add(tagUmask, u64(uint64(*cfg.Umask))))
	}
	for _, rl := range append(append([]configs.Rlimit{}, cfg.Rlimits...), p.Rlimits...) {
		errs = append(errs, add(tagRlimit, strconv.Itoa(rl.Type), u64(rl.Soft), u64(rl.Hard)))
	}
	if p.NoNewPrivileges {
		errs = append(errs, add(tagNoNewPrivs, ""))
	}
	if cfg.Seccomp != nil {
		prog, err := seccompProgram(cfg.Seccomp)
		if err != nil {
			return nil, nil, err
		}
		flags, err := seccompFlags(cfg.Seccomp)
		if err != nil {
			return nil, nil, err
		}
		errs = append(errs, add(tagSeccomp, u64(uint64(flags)), hex.EncodeToString(prog)))
	}
	groups := make([]string, len(p.Groups))
	for i, g := range p.Groups {
		groups[i] = u64(uint64(g))
	}
	errs = append(errs, add(tagUser, u64(uint64(p.UID)), u64(uint64(p.GID)), strings.Join(groups, ",")))
	if c := p.Capabilities; c != nil {
		errs = append(errs, add(tagCaps, u64(capMask(c.Bounding)), u64(capMask(c.Effective)),
			u64(capMask(c.Inheritable)), u64(capMask(c.Permitted)), u64(capMask(c.Ambient))))
	}
	cwd := p.Cwd
	if cwd == "" {
		cwd = "/"
	}
	errs = append(errs, add(tagCwd, cwd))
	var files []*os.File
	sent := []byte("0000")
	for k, f := range []*os.File{p.Stdin, p.Stdout, p.Stderr, p.ConsoleSocket} {
		if f != nil {
			files = append(files, f)
			sent[k] = '1'
		}
	}
	errs = append(errs, add(tagFiles, string(sent)))
	if p.ConsoleSocket != nil {
		errs = append(errs, add(tagTerminal, u64(uint64(p.ConsoleWidth)), u64(uint64(p.ConsoleHeight))))
	}
	for _, a := range p.Args {
		errs = append(errs, add(tagArg, a))
	}
	for _, v := range p.Env {
		errs = append(errs, add(tagEnv, v))
	}
	errs = append(errs, add(tagEnd, ""))
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	return append(binary.LittleEndian.AppendUint32(nil, uint32(len(e.b))), e.b...), files, nil
}

var capNumbers = func() map[string]uint {
	m := map[string]uint{}
	for _, c := range capability.ListKnown() {
		m["CAP_"+strings.ToUpper(c.String())] = uint(c)
	}
	return m
}()

// capMask turns capability names into a bit mask; names this kernel does
// not know are left out, as runc leaves them out (with a warning).
func capMask(names []string) uint64 {
	var m uint64
	for _, n := range names {
		if c, ok := capNumbers[n]; ok && c < 64 {
			m |= 1 << c
		}
	}
	return m
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

// Spawn starts an init in new namespaces (flags), waiting for its config.
// start wraps the process's start and registers its PID (the agent's
// reaper holds off meanwhile); release hands the PID back once the init
// has been waited for.
func Spawn(flags uintptr, start func(func() (int, error)) (int, error), release func(pid int)) (*Init, error) {
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
// has (or could not: then the error is the init's own).
func (i *Init) Start() error {
	defer i.sync.Close()
	if _, err := i.sync.Write([]byte{'G'}); err != nil {
		return fmt.Errorf("start container init: %w", err)
	}
	return i.expect(0)
}

// Close releases the init's sync socket without starting it: an init
// waiting for its config or for Start then exits.
func (i *Init) Close() { i.sync.Close() }
