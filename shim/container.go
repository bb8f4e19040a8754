package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/podvm/podvm/vm"
)

// container is one container of the sandbox: its files exposed to the
// guest through the share, its init process and its exec processes.
type container struct {
	id     string
	bundle string
	sb     *sandbox
	guest  *vm.Guest // the VM the container lives in
	spec   *specs.Spec
	init   *process

	mu    sync.Mutex
	execs map[string]*process
	// reserved holds exec IDs being registered in the guest: taken, but
	// not yet processes anybody may use.
	reserved map[string]bool
}

// shareStorage is the guest mount of the sandbox's shared directory.
var shareStorage = vm.Storage{
	Source: shareTag, Target: guestShareRoot, Type: "9p",
	// mmap caching lets the guest execute binaries from the share and map
	// files; msize is the largest message the virtio transport takes.
	Options: []string{"trans=virtio", "version=9p2000.L", "msize=512000", "cache=mmap"},
}

// maxSpec bounds a spec read from a bundle.
const maxSpec = 16 << 20

func readSpec(bundle string) (*specs.Spec, error) {
	f, err := os.Open(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSpec+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxSpec {
		return nil, fmt.Errorf("%s/config.json is larger than %d MiB", bundle, maxSpec>>20)
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parse %s/config.json: %w", bundle, err)
	}
	return &s, nil
}

// createContainer prepares the container's files on the host and creates
// it in the guest. On failure nothing it made is left.
func (sb *sandbox) createContainer(ctx context.Context, r *taskAPI.CreateTaskRequest) (_ *container, retErr error) {
	if r.Checkpoint != "" {
		return nil, fmt.Errorf("restore from checkpoint: %w", errdefs.ErrNotImplemented)
	}
	spec, err := readSpec(r.Bundle)
	if err != nil {
		return nil, fmt.Errorf("read spec of %s: %w", r.ID, err)
	}
	g := sb.runningGuest()
	if g == nil {
		return nil, fmt.Errorf("create %s: the sandbox's VM is not running: %w", r.ID, errdefs.ErrFailedPrecondition)
	}
	c := &container{id: r.ID, bundle: r.Bundle, sb: sb, guest: g, spec: spec, execs: map[string]*process{}, reserved: map[string]bool{}}
	share, err := openDir(sb.shareDir)
	if err != nil {
		return nil, err
	}
	defer share.Close()
	// The guest can write the share: whatever it put at the container's
	// name, the host neither follows nor reuses it.
	var st unix.Stat_t
	if err := unix.Fstatat(int(share.Fd()), c.id, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		return nil, fmt.Errorf("container %s: %w", r.ID, errdefs.ErrAlreadyExists)
	}
	defer func() {
		if retErr != nil {
			if err := c.unmount(); err != nil {
				log.G(ctx).WithError(err).WithField("container", c.id).Error("clean up after failed create")
			}
		}
	}()
	var rootfs []mount.Mount
	for _, m := range r.Rootfs {
		rootfs = append(rootfs, mount.Mount{Type: m.Type, Source: m.Source, Options: m.Options})
	}
	if err := mountRootfs(share, filepath.Join(c.id, "rootfs"), r.Bundle, spec, rootfs); err != nil {
		return nil, err
	}
	binds := map[int]string{}
	for i, m := range spec.Mounts {
		if !isBind(m) || isPodShm(m) {
			continue
		}
		if err := bindIntoShare(share, m, filepath.Join(c.id, "mounts", fmt.Sprint(i))); err != nil {
			return nil, err
		}
		binds[i] = guestMount(c.id, i)
	}
	gs, err := guestSpec(spec, translation{id: c.id, binds: binds, sandboxPid: sb.podPid(c.id, spec)})
	if err != nil {
		return nil, err
	}
	var netSysctls map[string]string
	if gs.Linux != nil {
		if netSysctls, gs.Linux.Sysctl, err = splitSysctls(c.id, gs.Linux.Sysctl); err != nil {
			return nil, err
		}
	}
	specJSON, err := json.Marshal(gs)
	if err != nil {
		return nil, err
	}

	if err := sb.fit(ctx, c.id, demandOf(specResources(spec)), false); err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			sb.forget(c.id)
		}
	}()

	stdio := stdioPaths{stdin: r.Stdin, stdout: r.Stdout, stderr: r.Stderr, terminal: r.Terminal}
	c.init = newProcess(c, "", stdio)
	c.init.pid = uint32(g.VM.PID())
	c.init.io, err = openIO(sb.ctx, c.id, sb.namespace, stdio)
	if err != nil {
		return nil, err
	}
	storages := []vm.Storage{shareStorage}
	if slices.ContainsFunc(spec.Mounts, isPodShm) {
		storages = append(storages, podShmStorage)
	}
	if err := g.SetSysctls(ctx, netSysctls); err != nil {
		c.init.io.close()
		return nil, err
	}
	pid, err := g.CreateContainer(ctx, vm.Container{
		ID:       c.id,
		Spec:     specJSON,
		Streams:  streams(stdio, c.init.io),
		Storages: storages,
	})
	if err != nil {
		c.init.io.close()
		return nil, err
	}
	c.init.guestPid = pid
	c.init.io.copy(sb.ctx, g, c.id, "")
	go sb.watchExit(c.init)
	log.G(ctx).WithField("container", c.id).WithField("guest_pid", pid).Info("container created")
	return c, nil
}

// streams tells the agent which streams exist.
func streams(s stdioPaths, h *hostIO) vm.Streams {
	return vm.Streams{
		Terminal: s.terminal,
		Stdin:    h.stdin != nil,
		Stdout:   h.stdout != nil,
		Stderr:   h.stderr != nil && !s.terminal,
	}
}

func (c *container) process(execID string) (*process, error) {
	if execID == "" {
		return c.init, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.execs[execID]
	if !ok {
		return nil, fmt.Errorf("process %s: %w", execID, errdefs.ErrNotFound)
	}
	return p, nil
}

// exec registers an exec process in the guest; Start runs it.
func (c *container) exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (_ *process, retErr error) {
	if err := c.init.CanExec(); err != nil {
		return nil, err
	}
	if r.Spec == nil {
		return nil, fmt.Errorf("exec %s without a process spec: %w", r.ExecID, errdefs.ErrInvalidArgument)
	}
	if err := checkExecProcess(r.ExecID, r.Spec.Value); err != nil {
		return nil, err
	}
	c.mu.Lock()
	if _, ok := c.execs[r.ExecID]; ok || c.reserved[r.ExecID] {
		c.mu.Unlock()
		return nil, fmt.Errorf("id %s: %w", r.ExecID, errdefs.ErrAlreadyExists)
	}
	// Reserve the ID while the guest is asked, as runc's shim does.
	c.reserved[r.ExecID] = true
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.reserved, r.ExecID)
		c.mu.Unlock()
	}()
	stdio := stdioPaths{stdin: r.Stdin, stdout: r.Stdout, stderr: r.Stderr, terminal: r.Terminal}
	p := newProcess(c, r.ExecID, stdio)
	p.pid = c.init.pid
	p.spec = r.Spec.Value
	var err error
	if p.io, err = openIO(c.sb.ctx, c.id, c.sb.namespace, stdio); err != nil {
		return nil, err
	}
	if err := c.guest.ExecProcess(ctx, c.id, r.ExecID, p.spec, streams(stdio, p.io)); err != nil {
		p.io.close()
		return nil, err
	}
	c.mu.Lock()
	c.execs[r.ExecID] = p
	c.mu.Unlock()
	return p, nil
}

// removeExec forgets a deleted exec process.
func (c *container) removeExec(id string) {
	c.mu.Lock()
	delete(c.execs, id)
	c.mu.Unlock()
}

// runningExecs lists the started exec processes that have not exited.
func (c *container) runningExecs() []*process {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ps []*process
	for _, p := range c.execs {
		if p.started() {
			select {
			case <-p.exited:
			default:
				ps = append(ps, p)
			}
		}
	}
	return ps
}

// destroy removes the container from the guest and its files from the
// share. It is the init process's delete, and safe to repeat. A VM that
// is gone took the container with it.
func (c *container) destroy(ctx context.Context) error {
	var errs []error
	if err := c.guest.DeleteContainer(ctx, c.id); err != nil && !errdefs.IsNotFound(err) && !errors.Is(err, vm.ErrStopped) {
		errs = append(errs, err)
	}
	c.init.io.close()
	c.mu.Lock()
	for _, p := range c.execs {
		p.io.close()
	}
	c.mu.Unlock()
	if err := c.unmount(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// unmount removes the container's files from the share.
func (c *container) unmount() error {
	return unmountTree(c.sb.dir, filepath.Join(filepath.Base(c.sb.shareDir), c.id))
}
