package network

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Loopback takes every TCP connection made to a loopback address (127.0.0.0/8
// or ::1) inside a pod's network namespace on the host. Nothing of the pod
// listens there: its processes are in the VM. containerd's CRI forwards a
// port by connecting to localhost:PORT in that namespace, so the shim
// takes such connections and joins them to the guest's port.
//
// One listener per address family takes them all, whatever the port: an
// eBPF sk_lookup program attached to the namespace hands it every
// connection to a loopback address. The port asked for stays the accepted
// connection's local port. The program goes with the namespace or with the
// listener's process, so a killed shim leaves nothing behind.
type Loopback struct {
	listeners []*net.TCPListener
	sockets   *ebpf.Map
	prog      *ebpf.Program
	link      link.Link
	conns     chan *net.TCPConn
	done      chan struct{}
	once      sync.Once
	wg        sync.WaitGroup
}

// ListenLoopback starts taking the loopback connections of the network
// namespace at nsPath.
func ListenLoopback(nsPath string) (_ *Loopback, retErr error) {
	ns, err := os.Open(nsPath)
	if err != nil {
		return nil, fmt.Errorf("open network namespace: %w", err)
	}
	defer ns.Close()
	l := &Loopback{conns: make(chan *net.TCPConn), done: make(chan struct{})}
	defer func() {
		if retErr != nil {
			l.Close()
		}
	}()
	if err := InNamespace(nsPath, func() error {
		// Plain TCP: a sockmap takes no MPTCP socket, which Go makes
		// listeners by default.
		var lc net.ListenConfig
		lc.SetMultipathTCP(false)
		for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
			ln, err := lc.Listen(context.Background(), "tcp", addr)
			if err != nil {
				if addr == "[::1]:0" {
					// The namespace has no IPv6: nothing to take there.
					continue
				}
				return err
			}
			l.listeners = append(l.listeners, ln.(*net.TCPListener))
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("listen on the namespace's loopback: %w", err)
	}
	l.sockets, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.SockMap, KeySize: 4, ValueSize: 8, MaxEntries: 2})
	if err != nil {
		return nil, fmt.Errorf("socket map: %w", err)
	}
	for i, ln := range l.listeners {
		raw, err := ln.SyscallConn()
		if err != nil {
			return nil, err
		}
		var uerr error
		if err := raw.Control(func(fd uintptr) { uerr = l.sockets.Update(uint32(i), uint64(fd), ebpf.UpdateAny) }); err != nil {
			return nil, err
		}
		if uerr != nil {
			return nil, fmt.Errorf("socket map: %w", uerr)
		}
	}
	l.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.SkLookup,
		AttachType:   ebpf.AttachSkLookup,
		Instructions: lookupProgram(l.sockets.FD()),
		License:      "Apache-2.0",
	})
	if err != nil {
		return nil, fmt.Errorf("load the sk_lookup program: %w", err)
	}
	if l.link, err = link.AttachNetNs(int(ns.Fd()), l.prog); err != nil {
		return nil, fmt.Errorf("attach the sk_lookup program: %w", err)
	}
	for _, ln := range l.listeners {
		l.wg.Add(1)
		go l.accept(ln)
	}
	return l, nil
}

// acceptRetry is the pause after a failed accept.
const acceptRetry = 50 * time.Millisecond

func (l *Loopback) accept(ln *net.TCPListener) {
	defer l.wg.Done()
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A connection the peer gave up on (ECONNABORTED), or
			// descriptors running out: neither ends the listener, and a
			// lasting one must not spin it.
			select {
			case <-l.done:
				return
			case <-time.After(acceptRetry):
				continue
			}
		}
		select {
		case l.conns <- c:
		case <-l.done:
			c.Close()
			return
		}
	}
}

// Accept returns the next connection; its local port is the one the
// connecting process asked for. It fails with net.ErrClosed after Close.
func (l *Loopback) Accept() (*net.TCPConn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops taking connections: the namespace's loopback is its own
// again. Connections accepted before stay open.
func (l *Loopback) Close() error {
	l.once.Do(func() {
		close(l.done)
		if l.link != nil {
			l.link.Close()
		}
		if l.prog != nil {
			l.prog.Close()
		}
		for _, ln := range l.listeners {
			ln.Close()
		}
		if l.sockets != nil {
			l.sockets.Close()
		}
	})
	l.wg.Wait()
	return nil
}

// lookupProgram is the sk_lookup program: a TCP connection to 127.0.0.0/8
// goes to the socket at key 0 of the map, one to ::1 to the socket at key
// 1; everything else takes the kernel's usual way (SK_PASS without a
// socket). Offsets are those of struct bpf_sk_lookup.
func lookupProgram(sockets int) asm.Instructions {
	const (
		family   = 8
		protocol = 12
		localIP4 = 40
		localIP6 = 44
		skPass   = 1
	)
	// Addresses are in network byte order: compare them as the CPU
	// loads them.
	word := func(b ...byte) int32 { return int32(binary.NativeEndian.Uint32(b)) }
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R6, protocol, asm.Word),
		asm.JNE.Imm(asm.R2, unix.IPPROTO_TCP, "pass"),
		asm.LoadMem(asm.R2, asm.R6, family, asm.Word),
		asm.JEq.Imm(asm.R2, unix.AF_INET6, "v6"),
		asm.JNE.Imm(asm.R2, unix.AF_INET, "pass"),
		asm.LoadMem(asm.R2, asm.R6, localIP4, asm.Word),
		asm.And.Imm(asm.R2, word(0xff, 0, 0, 0)),
		asm.JNE.Imm(asm.R2, word(127, 0, 0, 0), "pass"),
		asm.Mov.Imm(asm.R2, 0),
		asm.Ja.Label("lookup"),
		asm.LoadMem(asm.R2, asm.R6, localIP6, asm.Word).WithSymbol("v6"),
		asm.JNE.Imm(asm.R2, 0, "pass"),
		asm.LoadMem(asm.R2, asm.R6, localIP6+4, asm.Word),
		asm.JNE.Imm(asm.R2, 0, "pass"),
		asm.LoadMem(asm.R2, asm.R6, localIP6+8, asm.Word),
		asm.JNE.Imm(asm.R2, 0, "pass"),
		asm.LoadMem(asm.R2, asm.R6, localIP6+12, asm.Word),
		asm.JNE.Imm(asm.R2, word(0, 0, 0, 1), "pass"),
		asm.Mov.Imm(asm.R2, 1),
		asm.StoreMem(asm.RFP, -4, asm.R2, asm.Word).WithSymbol("lookup"),
		asm.LoadMapPtr(asm.R1, sockets),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.Mov.Reg(asm.R7, asm.R0),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Reg(asm.R2, asm.R7),
		asm.Mov.Imm(asm.R3, 0),
		asm.FnSkAssign.Call(),
		asm.Mov.Reg(asm.R1, asm.R7),
		asm.FnSkRelease.Call(),
		asm.Mov.Imm(asm.R0, skPass).WithSymbol("pass"),
		asm.Return(),
	}
}

// InNamespace runs fn on a thread in the network namespace at nsPath;
// sockets made there stay in it.
func InNamespace(nsPath string, fn func() error) error {
	ns, err := os.Open(nsPath)
	if err != nil {
		return fmt.Errorf("open network namespace: %w", err)
	}
	defer ns.Close()
	return onThreadIn(func() error {
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("enter the network namespace: %w", err)
		}
		return nil
	}, fn)
}
