package sandbox

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/podvm/podvm/debugconsole"
	"github.com/podvm/podvm/unixsock"
	"github.com/podvm/podvm/vm"
)

// consoleServer serves the sandbox's debug console socket: each connection
// is one shell in the guest, relayed frame by frame.
type consoleServer struct {
	sb   *Pod
	path string
	l    net.Listener

	mu    sync.Mutex
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

// consoleShareDir starts the names of the directories the busybox is
// staged in (one per console, see stage); the leading dot keeps them apart
// from containers' directories (containerd's IDs cannot start with one).
const consoleShareDir = ".debug-console"

// hostBusybox is used when none is installed beside the guest kernel
// (Debian's busybox-static).
const hostBusybox = "/bin/busybox"

// serveConsole opens the console socket of a VM booted with the console on.
func (sb *Pod) serveConsole() error {
	path := filepath.Join(sb.dir, debugconsole.SocketName)
	os.Remove(path)
	l, err := unixsock.Listen(path)
	if err != nil {
		return fmt.Errorf("debug console socket: %w", err)
	}
	// Root only: the console is a root shell in every container's VM.
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		os.Remove(path)
		return fmt.Errorf("debug console socket: %w", err)
	}
	cs := &consoleServer{sb: sb, path: path, l: l, conns: map[net.Conn]bool{}}
	sb.console = cs
	go cs.accept()
	return nil
}

func (cs *consoleServer) accept() {
	for {
		conn, err := cs.l.Accept()
		if err != nil {
			return
		}
		cs.mu.Lock()
		if cs.conns == nil {
			cs.mu.Unlock()
			conn.Close()
			return
		}
		cs.conns[conn] = true
		cs.wg.Add(1)
		cs.mu.Unlock()
		go func() {
			defer cs.wg.Done()
			cs.relay(conn)
			cs.mu.Lock()
			delete(cs.conns, conn)
			cs.mu.Unlock()
		}()
	}
}

// close stops serving, ends every open console and removes the socket.
func (cs *consoleServer) close() {
	cs.l.Close()
	os.Remove(cs.path)
	cs.mu.Lock()
	for c := range cs.conns {
		c.Close()
	}
	cs.conns = nil
	cs.mu.Unlock()
	cs.wg.Wait()
}

// relay runs one console: a shell started in the guest whose terminal is
// copied to and from conn until the shell exits or the client goes away;
// then what is left of the shell's session is killed.
func (cs *consoleServer) relay(conn net.Conn) {
	defer conn.Close()
	logger := log.G(cs.sb.ctx)
	send := debugconsole.NewSender(conn).Send
	fail := func(err error) {
		logger.WithError(err).Warn("debug console")
		_ = send(debugconsole.Error, []byte(err.Error()))
	}

	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	t, b, err := debugconsole.ReadFrame(conn)
	if err != nil || t != debugconsole.Open {
		fail(fmt.Errorf("the client did not open a console (frame %q, %v)", t, err))
		return
	}
	_ = conn.SetReadDeadline(time.Time{})
	hello, err := debugconsole.ParseHello(b)
	if err != nil {
		fail(err)
		return
	}
	g := cs.sb.running.Load()
	if g == nil {
		fail(fmt.Errorf("the VM of sandbox %s is not running", cs.sb.id))
		return
	}
	busybox, err := cs.stageBusybox()
	if err != nil {
		fail(err)
		return
	}
	ctx, cancel := context.WithCancel(cs.sb.ctx)
	defer cancel()
	id, err := g.StartConsole(ctx, vm.ConsoleShell{
		Busybox: busybox, Terminal: hello.Terminal, Term: hello.Term,
		Width: uint32(hello.Size.Width), Height: uint32(hello.Size.Height),
		Storages: []vm.Storage{shareStorage(g)},
	})
	if err != nil {
		fail(err)
		return
	}
	logger = logger.WithField("console", id)
	logger.Info("debug console opened")
	defer func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		if err := g.CloseConsole(cctx, id); err != nil {
			logger.WithError(err).Warn("close the debug console")
		}
		logger.Info("debug console closed")
	}()

	outDone := make(chan struct{})
	go func() {
		defer close(outDone)
		cs.copyOut(ctx, g, id, send)
	}()
	go func() {
		// The client going away ends the console: cancel the wait.
		defer cancel()
		cs.copyIn(ctx, g, id, hello.Terminal, conn)
	}()
	status, err := g.WaitConsole(ctx, id)
	if err != nil {
		if ctx.Err() == nil {
			fail(err)
		}
		return
	}
	// The shell's last words before its status; a background job holding
	// the terminal open does not hold up the exit for long.
	select {
	case <-outDone:
	case <-time.After(execOutputGrace):
	}
	_ = send(debugconsole.Exit, debugconsole.ExitBytes(int32(status)))
}

// frameWriter sends what is written to it as Data frames.
type frameWriter func(debugconsole.FrameType, []byte) error

func (f frameWriter) Write(b []byte) (int, error) {
	if err := f(debugconsole.Data, b); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (cs *consoleServer) copyOut(ctx context.Context, g *vm.Guest, id string, send func(debugconsole.FrameType, []byte) error) {
	_ = g.CopyOutput(ctx, vm.DebugConsole, id, vm.Stdout, frameWriter(send))
}

func (cs *consoleServer) copyIn(ctx context.Context, g *vm.Guest, id string, terminal bool, conn net.Conn) {
	stdin, in := io.Pipe()
	go func() {
		err := g.CopyInput(ctx, vm.DebugConsole, id, stdin)
		stdin.CloseWithError(err)
	}()
	// A client that goes away leaves the shell's stdin open; one that
	// sends EOF closes it.
	defer in.CloseWithError(errors.New("the debug console's client went away"))
	for {
		t, b, err := debugconsole.ReadFrame(conn)
		if err != nil {
			return
		}
		switch t {
		case debugconsole.Data:
			_, err = in.Write(b)
		case debugconsole.Resize:
			var s debugconsole.Size
			if s, err = debugconsole.ParseSize(b); err == nil {
				err = g.ResizePty(ctx, vm.DebugConsole, id, uint32(s.Width), uint32(s.Height))
			}
		case debugconsole.EOF:
			if terminal {
				// The client's terminal sends ^D itself.
				continue
			}
			err = in.Close()
		}
		if err != nil {
			log.G(ctx).WithError(err).Debug("debug console input ended")
			return
		}
	}
}

// stageBusybox puts a static busybox in the shared directory, where the
// guest runs it from, and returns its guest path. The guest image carries
// no shell: it costs nothing until an operator asks for one. Each console
// gets a fresh copy: the guest may have replaced the last one.
func (cs *consoleServer) stageBusybox() (string, error) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	src := filepath.Join(filepath.Dir(cs.sb.config().Hypervisor.Kernel), "busybox")
	if _, err := os.Stat(src); err != nil {
		src = hostBusybox
	}
	if err := checkStatic(src); err != nil {
		return "", fmt.Errorf("no busybox for the debug console: %w; install a static busybox beside the guest kernel (%s) or Debian's busybox-static", err, filepath.Dir(cs.sb.config().Hypervisor.Kernel))
	}
	dir, err := cs.stage(src)
	if err != nil {
		return "", fmt.Errorf("stage busybox: %w", err)
	}
	return guestShareRoot + "/" + dir + "/busybox", nil
}

// checkStatic makes sure path is an executable the guest can run: it has
// no C library, so a dynamically linked busybox would fail with a
// confusing "no such file".
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New(path + " is dynamically linked")
		}
	}
	return nil
}

// stage copies src into a directory of the share made for this console,
// under a name nobody can guess, and removes those of earlier consoles; it
// returns the directory's name. The guest may have put anything where an
// earlier copy was (a link to a host file, say), and over virtio-fs it
// keeps what it looked up for a second: a name of its own keeps the
// host from writing through the guest's doing and the guest from finding
// its stale entry instead of the new copy.
func (cs *consoleServer) stage(src string) (string, error) {
	share, err := openDir(cs.sb.shareDir)
	if err != nil {
		return "", err
	}
	defer share.Close()
	name, err := unguessable(consoleShareDir + "-")
	if err != nil {
		return "", err
	}
	if err := unix.Mkdirat(int(share.Fd()), name, 0o755); err != nil {
		return "", &os.PathError{Op: "mkdir", Path: filepath.Join(share.Name(), name), Err: err}
	}
	if err := removeOtherConsoles(cs.sb.shareDir, name); err != nil {
		return "", err
	}
	// An O_PATH handle cannot be written through: open the directory.
	d, err := openBeneath(share, name, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return "", err
	}
	defer d.Close()
	out, err := openBeneath(d, "busybox", unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW, 0o755)
	if err != nil {
		return "", err
	}
	return name, copyInto(out, src)
}

// copyInto copies src into out and closes out.
// removeOtherConsoles removes the console directories of share but keep.
// The guest may fill the share with names: they are read a batch at a
// time, never all at once.
func removeOtherConsoles(share, keep string) error {
	d, err := os.Open(share)
	if err != nil {
		return err
	}
	defer d.Close()
	for {
		names, err := d.Readdirnames(256)
		for _, n := range names {
			// RemoveAll removes a link, never what it points to, and
			// opens each directory below without following links.
			if strings.HasPrefix(n, consoleShareDir) && n != keep {
				if err := os.RemoveAll(filepath.Join(share, n)); err != nil {
					return err
				}
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func copyInto(out *os.File, src string) error {
	in, err := os.Open(src)
	if err != nil {
		out.Close()
		return err
	}
	defer in.Close()
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
