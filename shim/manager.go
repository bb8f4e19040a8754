// Package shim is podvm's containerd shim: the manager that answers
// containerd's `start` and `delete`, and the task service that runs a
// sandbox's containers in its VM.
package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/runtime/v2/shim"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"

	"github.com/podvm/podvm/sandbox"
	"github.com/podvm/podvm/vmconfig"
)

// annotationGroup groups `ctr run` containers into one VM, as CRI's
// sandbox ID groups a pod's.
const annotationGroup = "io.podvm.group"

type manager struct{ name string }

// NewManager returns the shim manager of runtime name
// (io.containerd.podvm.v2).
func NewManager(name string) shim.Manager { return manager{name: name} }

func (m manager) Name() string { return m.name }

func namespaceOf(ctx context.Context) (string, error) {
	return namespaces.NamespaceRequired(ctx)
}

type bundleSpec struct {
	Annotations map[string]string `json:"annotations,omitempty"`
}

func readBundleAnnotations(dir string) (map[string]string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, err
	}
	var s bundleSpec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parse config.json: %w", err)
	}
	return s.Annotations, nil
}

// sandboxOf is the sandbox a container belongs to: its CRI pod, else its
// io.podvm.group, else itself. The name becomes a directory, a socket, a
// QEMU option and a network namespace, so it must be an identifier.
func sandboxOf(id string, annotations map[string]string) (string, error) {
	if g := annotations[sandbox.AnnotationSandboxID]; g != "" {
		return g, sandbox.CheckID("sandbox ID (annotation "+sandbox.AnnotationSandboxID+")", g)
	}
	if g, ok := annotations[annotationGroup]; ok {
		return g, sandbox.CheckID("group (annotation "+annotationGroup+")", g)
	}
	return id, sandbox.CheckID("container ID", id)
}

// Start is `containerd-shim-podvm-v2 start`: it prints the address of the
// shim serving the container, starting one for a new sandbox or returning
// the running one of the container's pod.
func (m manager) Start(ctx context.Context, id string, opts shim.StartOpts) (string, error) {
	ns, err := namespaceOf(ctx)
	if err != nil {
		return "", err
	}
	in := readStart(os.Stdin, id, ns)
	boot := in.boot
	address, err := m.start(ctx, id, ns, opts, in)
	if err != nil || boot == nil {
		return address, err
	}
	return string(bootstrapResult(address)), nil
}

// start finds or starts the shim of the container's sandbox and returns
// its address.
func (manager) start(ctx context.Context, id, ns string, opts shim.StartOpts, in startInput) (_ string, retErr error) {
	boot := in.boot
	annotations, err := readBundleAnnotations(".")
	if errors.Is(err, fs.ErrNotExist) {
		// The Sandbox API's bundle has no spec: the sandbox is the
		// instance.
		annotations, err = nil, nil
	}
	if err != nil {
		return "", err
	}
	group, err := sandboxOf(id, annotations)
	if err != nil {
		return "", err
	}
	address, err := shim.SocketAddress(ctx, opts.Address, group)
	if err != nil {
		return "", err
	}
	if boot != nil && boot.socketDir != "" {
		address = "unix://" + filepath.Join(boot.socketDir, filepath.Base(address))
	}
	socket, err := shim.NewSocket(address)
	if err != nil {
		if !shim.SocketEaddrinuse(err) {
			return "", fmt.Errorf("create shim socket: %w", err)
		}
		if shim.CanConnect(address) {
			// The pod's shim runs already: this container joins its VM.
			if err := shim.WriteAddress("address", address); err != nil {
				return "", err
			}
			return address, nil
		}
		if err := shim.RemoveSocket(address); err != nil {
			return "", fmt.Errorf("remove stale shim socket: %w", err)
		}
		if socket, err = shim.NewSocket(address); err != nil {
			return "", fmt.Errorf("create shim socket: %w", err)
		}
	}
	defer func() {
		if retErr != nil {
			socket.Close()
			_ = shim.RemoveSocket(address)
		}
	}()
	if err := shim.WriteAddress("address", address); err != nil {
		return "", err
	}
	f, err := socket.File()
	if err != nil {
		return "", err
	}
	defer f.Close()

	if err := saveRuntimeOptions(".", in.options); err != nil {
		return "", err
	}
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	args := []string{"-namespace", ns, "-id", group, "-address", opts.Address}
	if opts.Debug {
		args = append(args, "-debug")
	}
	cmd := exec.Command(self, args...)
	cmd.Dir, _ = os.Getwd()
	cmd.Env = append(os.Environ(), "GOMAXPROCS=4")
	cmd.ExtraFiles = []*os.File{f}
	// Its own session: the shim outlives this `start` process and must
	// not get the terminal's signals.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start shim: %w", err)
	}
	defer func() {
		if retErr != nil {
			_ = cmd.Process.Kill()
		}
	}()
	go func() { _ = cmd.Wait() }()
	if err := shim.WritePidFile("shim.pid", cmd.Process.Pid); err != nil {
		return "", err
	}
	if err := shim.AdjustOOMScore(cmd.Process.Pid); err != nil {
		log.G(ctx).WithError(err).Debug("adjust shim OOM score")
	}
	return address, nil
}

// Stop is `containerd-shim-podvm-v2 delete`, run by containerd in the
// container's bundle after its shim died: it removes what the shim left.
// Where things are comes from the record the shim kept in the bundle, else
// from the configuration and the spec. While the pod's shim still answers
// it does nothing: the cleanup is that shim's. What fails is kept, so that
// the next delete finishes it.
func (manager) Stop(ctx context.Context, id string) (shim.StopStatus, error) {
	rec, err := sandbox.ReadRecord(".")
	if err != nil {
		if rec, err = recordFromConfig(id); err != nil {
			return shim.StopStatus{}, err
		}
	}
	status := shim.StopStatus{ExitedAt: time.Now(), ExitStatus: 128 + int(unix.SIGKILL)}
	address, aerr := shim.ReadAddress("address")
	if aerr == nil && shimAnswers(ctx, address) {
		log.G(ctx).WithField("sandbox", rec.SandboxID).Info("the sandbox's shim still answers; leaving the cleanup to it")
		return status, nil
	}
	if err := sandbox.Cleanup(rec.SandboxDir, rec.SandboxID, id, rec.ShareDir); err != nil {
		return shim.StopStatus{}, fmt.Errorf("clean up sandbox %s after its shim (run delete again once fixed): %w", rec.SandboxID, err)
	}
	// A killed shim leaves its socket.
	if aerr == nil {
		_ = shim.RemoveSocket(address)
	}
	return status, nil
}

// recordFromConfig is where a container's sandbox is when its bundle has
// no record (the shim died before Create): the configuration's state_dir
// and the spec's grouping.
func recordFromConfig(id string) (sandbox.Record, error) {
	cfg, err := vmconfig.Load()
	if err != nil {
		return sandbox.Record{}, fmt.Errorf("the bundle has no %s and the configuration does not load: %w", sandbox.RecordName, err)
	}
	annotations, err := readBundleAnnotations(".")
	if err != nil {
		log.L.WithError(err).Warn("read bundle spec; assuming the container is its own sandbox")
	}
	group, err := sandboxOf(id, annotations)
	if err != nil {
		return sandbox.Record{}, err
	}
	return sandbox.Record{SandboxID: group, SandboxDir: sandbox.Dir(cfg, group)}, nil
}

// shimAnswers reports whether a shim serves at address. A socket that
// merely accepts is not enough: a shim that was just killed may still
// have its listener in the kernel for a moment, and a dying one accepts
// and never answers.
func shimAnswers(ctx context.Context, address string) bool {
	conn, err := shim.AnonDialer(address, time.Second)
	if err != nil {
		return false
	}
	client := ttrpc.NewClient(conn)
	defer client.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err = taskAPI.NewTaskClient(client).Connect(ctx, &taskAPI.ConnectRequest{})
	return err == nil
}
