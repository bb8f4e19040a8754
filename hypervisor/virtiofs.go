package hypervisor

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Shared filesystems: how Config.Shares reach the guest.
const (
	// FS9P has QEMU serve the shares itself (virtio-9p): no process of
	// its own, and the VM can be restored from a template.
	FS9P = "9p"
	// FSVirtio has a virtiofsd per share serve it (virtio-fs). The daemon
	// reads and writes the guest's RAM, so the RAM is shared memory, which
	// a template's copy-on-write RAM cannot be: such VMs always boot.
	FSVirtio = "virtio-fs"
)

// virtiofsd is the virtio-fs daemon of one share.
type virtiofsd struct {
	cmd *exec.Cmd
	// listener is the daemon's vhost-user socket (its --fd), until the
	// daemon has its copy.
	listener *os.File
	done     chan struct{} // closed once the started daemon is reaped
	exit     error         // how it ended; valid once done is closed
}

// virtiofsdExitGrace is how long a daemon has to notice QEMU is gone (its
// socket closes) and exit by itself before it is killed.
const virtiofsdExitGrace = 2 * time.Second

// newVirtiofsd prepares the daemon for share i and returns QEMU's end of
// its socket, already connected. The daemon only takes a listening socket
// (--fd), so one is bound in the private SocketDir, connected to at once
// and unlinked: QEMU's is the only connection it ever sees, and nothing is
// left on disk.
func newVirtiofsd(c *Config, i int, sh Share) (*virtiofsd, *os.File, error) {
	dir, err := os.Open(c.SocketDir)
	if err != nil {
		return nil, nil, fmt.Errorf("virtio-fs socket directory: %w", err)
	}
	defer dir.Close()
	// Through the directory's descriptor: a socket path must fit in 108
	// bytes, and a sandbox's directory may not.
	path := fmt.Sprintf("/proc/self/fd/%d/virtiofs%d.sock", dir.Fd(), i)
	lfd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("virtio-fs socket: %w", err)
	}
	listener := os.NewFile(uintptr(lfd), "virtiofsd-listener")
	cfd := -1
	defer func() {
		_ = unix.Unlinkat(int(dir.Fd()), filepath.Base(path), 0)
		if err != nil {
			listener.Close()
			if cfd >= 0 {
				unix.Close(cfd)
			}
		}
	}()
	_ = unix.Unlinkat(int(dir.Fd()), filepath.Base(path), 0)
	if err = unix.Bind(lfd, &unix.SockaddrUnix{Name: path}); err != nil {
		return nil, nil, fmt.Errorf("bind the virtio-fs socket in %s: %w", c.SocketDir, err)
	}
	if err = unix.Listen(lfd, 1); err != nil {
		return nil, nil, fmt.Errorf("listen on the virtio-fs socket: %w", err)
	}
	if cfd, err = unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
		return nil, nil, fmt.Errorf("virtio-fs socket: %w", err)
	}
	if err = unix.Connect(cfd, &unix.SockaddrUnix{Name: path}); err != nil {
		return nil, nil, fmt.Errorf("connect to the virtio-fs socket: %w", err)
	}
	logLevel := "warn"
	if c.Debug {
		logLevel = "info"
	}
	cmd := exec.Command(c.Virtiofsd,
		"--fd=3",
		"-o", "source="+sh.Path,
		"-o", "cache="+c.VirtioFSCache,
		// chroot, not a mount namespace of its own: the containers'
		// files are mounted into the share after the daemon starts, and
		// a namespace of its own sees them only where the host's mounts
		// propagate. Either way the daemon resolves every guest name one
		// component at a time beneath the share, without following links.
		"-o", "sandbox=chroot",
		// File capabilities and the like, as 9p's passthrough keeps them.
		"-o", "xattr",
		"-o", "log_level="+logLevel,
	)
	cmd.ExtraFiles = []*os.File{listener}
	// The daemon dies with the thread that starts QEMU, as QEMU does.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	return &virtiofsd{cmd: cmd, listener: listener}, os.NewFile(uintptr(cfd), "virtiofs-qemu"), nil
}

// start runs the daemon with its output to out; the caller's copy of its
// socket is closed.
func (d *virtiofsd) start(out *os.File) error {
	d.cmd.Stdout, d.cmd.Stderr = out, out
	err := d.cmd.Start()
	d.listener.Close()
	if err != nil {
		return fmt.Errorf("exec %s: %w", d.cmd.Path, err)
	}
	d.done = make(chan struct{})
	go func() {
		d.exit = d.cmd.Wait()
		close(d.done)
	}()
	return nil
}

// wait reaps a started daemon once QEMU has exited: it normally exits when
// its socket closes; one that does not is killed.
func (d *virtiofsd) wait() {
	if d.done == nil {
		return
	}
	select {
	case <-d.done:
	case <-time.After(virtiofsdExitGrace):
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}

// watchDaemon stops the VM when a virtio-fs daemon ends before QEMU does:
// the guest's files are gone, and every process touching them would hang
// (Kata stops the sandbox too). The daemon's end is in QEMU's exit error.
func (vm *VM) watchDaemon(d *virtiofsd) {
	select {
	case <-vm.exited:
	case <-d.done:
		select {
		case <-vm.exited:
			// QEMU went first; the daemon followed, as it should.
			return
		default:
		}
		vm.stderr.add(fmt.Sprintf("virtiofsd (pid %d) ended (%v) while the VM ran: the VM is stopped, its shared files are gone", d.cmd.Process.Pid, d.exit))
		vm.Kill()
	}
}

// checkVirtioFS checks what virtio-fs needs beyond the shares themselves.
func (c *Config) checkVirtioFS() []error {
	var errs []error
	if c.Virtiofsd == "" {
		errs = append(errs, errors.New("virtio-fs needs a virtiofsd binary (hypervisor.virtio_fs_daemon)"))
	} else if _, err := exec.LookPath(c.Virtiofsd); err != nil {
		errs = append(errs, fmt.Errorf("virtiofsd binary %s not found: install it with `apt-get install qemu-system-common`, set hypervisor.virtio_fs_daemon, or use hypervisor.shared_fs = \"9p\"", c.Virtiofsd))
	}
	switch c.VirtioFSCache {
	case "auto", "always", "none":
	default:
		errs = append(errs, fmt.Errorf("unknown virtio-fs cache mode %q: use auto, always or none", c.VirtioFSCache))
	}
	if st, err := os.Stat(c.SocketDir); c.SocketDir == "" || err != nil || !st.IsDir() {
		errs = append(errs, fmt.Errorf("virtio-fs needs a private directory for its sockets, not %q", c.SocketDir))
	}
	if c.Memory != nil {
		errs = append(errs, errors.New("a VM with virtio-fs cannot have its RAM in a template's file: virtiofsd must share it"))
	}
	for _, sh := range c.Shares {
		// virtiofsd splits its -o options at commas.
		if strings.Contains(sh.Path, ",") {
			errs = append(errs, fmt.Errorf("virtio-fs cannot share %s: the path has a comma (move state_dir, or use hypervisor.shared_fs = \"9p\")", sh.Path))
		}
	}
	return errs
}
