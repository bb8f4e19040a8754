package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/podvm/podvm/hypervisor"
	"github.com/podvm/podvm/vm"
)

// Container is one container of the pod: its files exposed to the guest
// through the share, its init process and its exec processes.
type Container struct {
	id     string
	dir    string // its directory in the share (shareDirName)
	bundle string
	sb     *Pod
	guest  *vm.Guest // the VM the container lives in
	spec   *specs.Spec
	init   *Process

	mu    sync.Mutex
	execs map[string]*Process
	// reserved holds exec IDs being registered in the guest: taken, but
	// not yet processes anybody may use.
	reserved map[string]bool
	// oomKills is the guest's count of the container's OOM kills, as
	// last reported.
	oomKills uint64
}

// shareStorage is the guest mount of the sandbox's shared directory, over
// the filesystem g serves it with.
func shareStorage(g *vm.Guest) vm.Storage {
	if g.SharedFS == hypervisor.FSVirtio {
		return vm.Storage{Source: shareTag, Target: guestShareRoot, Type: "virtiofs"}
	}
	return vm.Storage{
		Source: shareTag, Target: guestShareRoot, Type: "9p",
		// mmap caching lets the guest execute binaries from the share
		// and map files; msize is the largest message the virtio
		// transport takes.
		Options: []string{"trans=virtio", "version=9p2000.L", "msize=512000", "cache=mmap"},
	}
}

// maxSpec bounds a spec read from a bundle.
const maxSpec = 16 << 20

// ReadSpec reads a bundle's config.json, bounded: once per Create.
func ReadSpec(bundle string) (*specs.Spec, error) {
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

// CreateRequest is a container to create in the pod.
type CreateRequest struct {
	ID     string
	Bundle string
	// Spec is the container's OCI spec as containerd wrote it.
	Spec *specs.Spec
	// Rootfs are containerd's rootfs mounts; none means the spec's root
	// in the bundle (`ctr run --rootfs`).
	Rootfs []mount.Mount
	Stdio  Stdio
}

// Create checks a container's request, boots the pod's VM if this is its
// first container (the spec sizes it), prepares the container's files and
// creates it in the guest. On failure nothing it made is left; a VM booted
// for it alone goes too, unless the Sandbox API holds the pod.
func (sb *Pod) Create(ctx context.Context, r CreateRequest) (*Container, error) {
	if err := CheckID("container ID", r.ID); err != nil {
		return nil, err
	}
	if _, ok := sb.Container(r.ID); ok {
		return nil, fmt.Errorf("container %s: %w", r.ID, errdefs.ErrAlreadyExists)
	}
	if err := checkSpec(r.ID, r.Spec, len(r.Rootfs)); err != nil {
		return nil, err
	}
	dir, err := shareDirName(r.ID)
	if err != nil {
		return nil, err
	}
	// Before anything is made: `delete` finds it all from here.
	if err := WriteRecord(r.Bundle, Record{SandboxID: sb.id, SandboxDir: sb.dir, ShareDir: dir}); err != nil {
		return nil, err
	}
	if err := sb.Boot(ctx, r.Spec); err != nil {
		return nil, fmt.Errorf("boot the VM for %s: %w", r.ID, err)
	}
	c, err := sb.createContainer(ctx, r, dir)
	if err != nil {
		if sb.Empty() && !sb.Held() {
			// Nothing else needs the VM just booted for it.
			_ = sb.Stop(ctx)
		}
		return nil, err
	}
	sb.add(c)
	return c, nil
}

// shareDirName names a container's directory in the share: its ID and a
// random suffix, new for every container. A name the guest has never
// looked up is one no guest cache holds: over virtio-fs the guest trusts
// its lookups for a second, and a container ID used again in the pod
// would otherwise find the last one's files. Nor can the guest guess it
// and prepare something there.
func shareDirName(id string) (string, error) { return unguessable(id + ".") }

// unguessable is prefix followed by random hex: a name in the share that
// neither the guest nor its caches can know before the host makes it.
func unguessable(prefix string) (string, error) {
	var suffix [6]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return "", err
	}
	return prefix + hex.EncodeToString(suffix[:]), nil
}

// createContainer prepares the container's files on the host, in the
// share's directory dir, and creates it in the guest. On failure nothing
// it made is left.
func (sb *Pod) createContainer(ctx context.Context, r CreateRequest, dir string) (_ *Container, retErr error) {
	spec := r.Spec
	g := sb.Guest()
	if g == nil {
		return nil, fmt.Errorf("create %s: the sandbox's VM is not running: %w", r.ID, errdefs.ErrFailedPrecondition)
	}
	c := &Container{id: r.ID, dir: dir, bundle: r.Bundle, sb: sb, guest: g, spec: spec, execs: map[string]*Process{}, reserved: map[string]bool{}}
	share, err := openDir(sb.shareDir)
	if err != nil {
		return nil, err
	}
	defer share.Close()
	// The guest can write the share: whatever it put at the directory's
	// name (had it guessed it), the host neither follows nor reuses it.
	if err := unix.Mkdirat(int(share.Fd()), dir, 0o755); err != nil {
		return nil, fmt.Errorf("container %s: directory %s in the share: %w", r.ID, dir, err)
	}
	ph := newPhases(sb.metrics)
	defer func() {
		if retErr != nil {
			if err := c.unmount(); err != nil {
				log.G(ctx).WithError(err).WithField("container", c.id).Error("clean up after failed create")
			}
		}
	}()
	if err := mountRootfs(share, filepath.Join(dir, "rootfs"), r.Bundle, spec, append([]mount.Mount(nil), r.Rootfs...)); err != nil {
		return nil, err
	}
	binds := map[int]string{}
	submounts := map[int][]submount{}
	for i, m := range spec.Mounts {
		if !isBind(m) || isPodShm(m) {
			continue
		}
		subs, err := bindIntoShare(share, m, filepath.Join(dir, "mounts", fmt.Sprint(i)))
		if err != nil {
			return nil, err
		}
		binds[i], submounts[i] = guestMount(dir, i), subs
	}
	ph.mark("rootfs")
	gs, err := guestSpec(spec, translation{id: c.id, dir: dir, binds: binds, submounts: submounts, sandboxPid: sb.podPid(c.id, spec.Annotations)})
	if err != nil {
		return nil, err
	}
	podShm := slices.ContainsFunc(spec.Mounts, isPodShm)
	if files := sb.heldFiles(); files != nil {
		podShm = withPodFiles(gs, files)
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

	stdio := r.Stdio
	c.init = newProcess(c, "", stdio)
	c.init.pid = uint32(g.VM.PID())
	c.init.io, err = openIO(sb.ctx, c.id, sb.namespace, stdio)
	if err != nil {
		return nil, err
	}
	storages := []vm.Storage{shareStorage(g)}
	if podShm {
		storages = append(storages, podShmStorage)
	}
	if err := g.SetSysctls(ctx, netSysctls); err != nil {
		c.init.io.close()
		return nil, err
	}
	ph.mark("prepare")
	pid, err := g.CreateContainer(ctx, vm.Container{
		ID:       c.id,
		Spec:     specJSON,
		Streams:  streams(stdio, c.init.io),
		Storages: storages,
		Phases:   ph.add,
	})
	if err != nil {
		c.init.io.close()
		return nil, err
	}
	c.init.guestPid = pid
	c.init.io.copy(sb.ctx, g, c.id, "")
	go sb.watchExit(c.init)
	ph.mark("guest_create")
	log.G(ctx).WithField("container", c.id).WithField("guest_pid", pid).WithFields(ph.fields).Info("container created")
	return c, nil
}

// streams tells the agent which streams exist.
func streams(s Stdio, h *hostIO) vm.Streams {
	return vm.Streams{
		Terminal: s.Terminal,
		Stdin:    h.stdin != nil,
		Stdout:   h.stdout != nil,
		Stderr:   h.stderr != nil && !s.Terminal,
	}
}

// ID is the container's ID.
func (c *Container) ID() string { return c.id }

// Bundle is the container's bundle.
func (c *Container) Bundle() string { return c.bundle }

// Guest is the VM the container lives in.
func (c *Container) Guest() *vm.Guest { return c.guest }

// Init is the container's init process.
func (c *Container) Init() *Process { return c.init }

// Process is the init process (execID "") or an exec process.
func (c *Container) Process(execID string) (*Process, error) {
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

// ExecRequest is an exec process to register in a container.
type ExecRequest struct {
	ID string
	// Process is its OCI process (JSON).
	Process []byte
	Stdio   Stdio
}

// Exec registers an exec process in the guest; its Start runs it.
func (c *Container) Exec(ctx context.Context, r ExecRequest) (_ *Process, retErr error) {
	if err := CheckID("exec ID", r.ID); err != nil {
		return nil, err
	}
	if err := c.init.CanExec(); err != nil {
		return nil, err
	}
	if r.Process == nil {
		return nil, fmt.Errorf("exec %s without a process spec: %w", r.ID, errdefs.ErrInvalidArgument)
	}
	if err := checkExecProcess(r.ID, r.Process); err != nil {
		return nil, err
	}
	c.mu.Lock()
	if _, ok := c.execs[r.ID]; ok || c.reserved[r.ID] {
		c.mu.Unlock()
		return nil, fmt.Errorf("id %s: %w", r.ID, errdefs.ErrAlreadyExists)
	}
	// Reserve the ID while the guest is asked, as runc's shim does.
	c.reserved[r.ID] = true
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.reserved, r.ID)
		c.mu.Unlock()
	}()
	p := newProcess(c, r.ID, r.Stdio)
	p.pid = c.init.pid
	p.spec = r.Process
	var err error
	if p.io, err = openIO(c.sb.ctx, c.id, c.sb.namespace, r.Stdio); err != nil {
		return nil, err
	}
	if err := c.guest.ExecProcess(ctx, c.id, r.ID, p.spec, streams(r.Stdio, p.io)); err != nil {
		p.io.close()
		return nil, err
	}
	c.mu.Lock()
	c.execs[r.ID] = p
	c.mu.Unlock()
	return p, nil
}

// RemoveExec forgets a deleted exec process.
func (c *Container) RemoveExec(id string) {
	c.mu.Lock()
	delete(c.execs, id)
	c.mu.Unlock()
}

// runningExecs lists the started exec processes that have not exited.
func (c *Container) runningExecs() []*Process {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ps []*Process
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
func (c *Container) destroy(ctx context.Context) error {
	if c.sb.alone(c.id) {
		// The VM stops next with everything in it (see Pod.Remove), and
		// the share is unmounted once it has: asking the guest to
		// delete the container first would only cost a round trip.
		c.closeIO()
		return nil
	}
	var errs []error
	if err := c.guest.DeleteContainer(ctx, c.id); err != nil && !errdefs.IsNotFound(err) && !errors.Is(err, vm.ErrStopped) {
		errs = append(errs, err)
	}
	c.closeIO()
	if err := c.unmount(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// closeIO ends the copying of the container's streams.
func (c *Container) closeIO() {
	c.init.io.close()
	c.mu.Lock()
	for _, p := range c.execs {
		p.io.close()
	}
	c.mu.Unlock()
}

// unmount removes the container's files from the share.
func (c *Container) unmount() error {
	return unmountTree(c.sb.dir, filepath.Join(filepath.Base(c.sb.shareDir), c.dir))
}

// Update applies new limits to the container: the VM first (it grows where
// it can, and refuses limits it could never honour before the container's
// cgroup changes), then the container's cgroup in the guest.
func (c *Container) Update(ctx context.Context, res *specs.LinuxResources) error {
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	prev := c.sb.demand(c.id)
	if err := c.sb.fit(ctx, c.id, prev.updated(res), true); err != nil {
		return fmt.Errorf("update %s: %w", c.id, err)
	}
	if err := c.init.Update(ctx, b); err != nil {
		c.sb.setDemand(c.id, prev)
		return err
	}
	return nil
}

// ProcessInfo is a process of the container as the guest lists it, with
// the exec ID only where it names one of the container's exec processes.
type ProcessInfo struct {
	Pid    uint32
	ExecID string
}

// Pids lists the container's processes.
func (c *Container) Pids(ctx context.Context) ([]ProcessInfo, error) {
	procs, err := c.guest.Pids(ctx, c.id)
	if err != nil {
		return nil, err
	}
	out := make([]ProcessInfo, 0, len(procs))
	for _, pi := range procs {
		info := ProcessInfo{Pid: pi.Pid}
		if _, err := c.Process(pi.ExecID); pi.ExecID != "" && err == nil {
			info.ExecID = pi.ExecID
		}
		out = append(out, info)
	}
	return out, nil
}
