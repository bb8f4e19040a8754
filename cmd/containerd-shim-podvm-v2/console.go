package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"time"

	"github.com/containerd/console"
	"golang.org/x/sys/unix"

	"github.com/podvm/podvm/debugconsole"
	"github.com/podvm/podvm/unixsock"
	"github.com/podvm/podvm/vmconfig"
)

// runConsole is `console SANDBOX_ID`: a shell in the sandbox's guest,
// outside its containers, through the shim's console socket. It exits with
// the shell's status.
func runConsole(args []string) int {
	fs := flag.NewFlagSet("console", flag.ContinueOnError)
	stateDir := fs.String("state-dir", "", "podvm's state directory (default: state_dir of the configuration)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: containerd-shim-podvm-v2 console [--state-dir DIR] SANDBOX_ID")
		fs.PrintDefaults()
	}
	// Flags may follow the ID too.
	var id string
	for {
		if err := fs.Parse(args); err != nil {
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		if id != "" {
			fs.Usage()
			return 2
		}
		id, args = fs.Arg(0), fs.Args()[1:]
	}
	if id == "" {
		fs.Usage()
		return 2
	}
	if *stateDir == "" {
		cfg, err := vmconfig.Load()
		if err != nil {
			fmt.Fprintf(os.Stderr, "console: %v (fix the configuration, or pass --state-dir)\n", err)
			return 1
		}
		*stateDir = cfg.StateDir
	}
	conn, err := dialConsole(*stateDir, id)
	if err != nil {
		fmt.Fprintf(os.Stderr, "console: %v\n", err)
		return 1
	}
	defer conn.Close()
	status, err := attach(conn, os.Stdin, os.Stdout)
	if err != nil {
		fmt.Fprintf(os.Stderr, "console: %v\n", err)
		return 1
	}
	return status
}

// dialConsole connects to the console of sandbox id, or says why there is
// none.
func dialConsole(stateDir, id string) (net.Conn, error) {
	dir := filepath.Join(stateDir, "sandboxes", id)
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("no sandbox %q in %s: give the pod's sandbox ID (crictl pods --no-trunc -q) or, for ctr run, the container's ID", id, dir)
	}
	path := filepath.Join(dir, debugconsole.SocketName)
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("the debug console is off for sandbox %s (no %s): set debug_console = true in podvm's configuration (or the runtime handler's ConfigPath) and recreate the pod", id, path)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := unixsock.Dial(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("connect to the console of sandbox %s: %w (is its shim still running?)", id, err)
	}
	return conn, nil
}

// attach relays a terminal (raw, resized with the window), or a script on
// plain input, to a console and returns the shell's exit status.
func attach(conn net.Conn, in *os.File, out io.Writer) (int, error) {
	sender := debugconsole.NewSender(conn)
	send := sender.Send
	hello := debugconsole.Hello{Term: os.Getenv("TERM"), Size: debugconsole.Size{Width: 80, Height: 24}}
	if c, err := console.ConsoleFromFile(in); err == nil {
		if ws, err := c.Size(); err == nil && ws.Width > 0 {
			hello.Size = debugconsole.Size{Width: ws.Width, Height: ws.Height}
		}
		hello.Terminal = true
		if err := c.SetRaw(); err != nil {
			return 0, fmt.Errorf("raw terminal: %w", err)
		}
		defer c.Reset()
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, unix.SIGWINCH)
		defer signal.Stop(winch)
		go func() {
			for range winch {
				if ws, err := c.Size(); err == nil {
					_ = send(debugconsole.Resize, debugconsole.Size{Width: ws.Width, Height: ws.Height}.Bytes())
				}
			}
		}()
	}
	if err := sender.Hello(hello); err != nil {
		return 0, fmt.Errorf("open the console: %w", err)
	}
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := in.Read(buf)
			if n > 0 {
				if send(debugconsole.Data, buf[:n]) != nil {
					return
				}
			}
			if err != nil {
				_ = send(debugconsole.EOF, nil)
				return
			}
		}
	}()
	for {
		t, b, err := debugconsole.ReadFrame(conn)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return 0, errors.New("the shim closed the console without the shell's status (did the pod stop?)")
			}
			return 0, fmt.Errorf("console connection: %w", err)
		}
		switch t {
		case debugconsole.Data:
			if _, err := out.Write(b); err != nil {
				return 0, err
			}
		case debugconsole.Exit:
			st, err := debugconsole.ParseExit(b)
			return int(st), err
		case debugconsole.Error:
			return 0, errors.New(string(b))
		}
	}
}
