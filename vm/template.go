package vm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	agentapi "github.com/podvm/podvm/api/agent/v1"
	"github.com/podvm/podvm/hypervisor"
	"github.com/podvm/podvm/vmconfig"
)

// A template is a VM booted once for a node configuration and saved at the
// moment its agent waits for its boot record (see agentapi.BootRecord):
// nothing of any pod is in it yet, not even the secret. Every pod's VM of
// the same shape is then restored from it instead of booting: QEMU maps the
// template's RAM copy-on-write and loads its device state, and the agent
// reads a boot record of its own, so each VM still has its own secret,
// CRNG seed and clock, and later its own MACs and addresses. Templates live
// one directory per fingerprint
// (hypervisor.Fingerprint) in template.dir (by default on tmpfs, in
// /dev/shm): a change to QEMU, the kernel, the initramfs or
// the VM's shape makes a new one.

// Template is a saved VM on disk.
type Template struct {
	Dir string
	// Key is the fingerprint of what the template was built from.
	Key string
}

const (
	templateMemory = "memory"
	templateState  = "state"
)

func (t *Template) memory() string { return filepath.Join(t.Dir, templateMemory) }
func (t *Template) state() string  { return filepath.Join(t.Dir, templateState) }

// templateShape is the configuration a template of VMs like hc is built
// with, and its key: hc's with the per-VM details taken out.
func templateShape(hc hypervisor.Config) (hypervisor.Config, string, error) {
	key, err := hypervisor.Fingerprint(hc)
	if err != nil {
		return hc, "", err
	}
	return hypervisor.TemplateShape(hc), key, nil
}

// templateUsable says why VMs planned as b cannot come from a template, or
// "" if they can.
func templateUsable(c *vmconfig.Config, b bootPlan) string {
	switch {
	case !c.Template.Enabled:
		return "templates are disabled (template.enabled)"
	case b.vsock:
		// A vhost-vsock device's context ID is the VM's own.
		return "the vsock agent transport does not restore from templates"
	case b.hypervisor.SharedFS == hypervisor.FSVirtio:
		// virtiofsd maps the guest's RAM shared; a restored VM's is the
		// template's file mapped private. QEMU 7.2 cannot migrate a
		// vhost-user-fs device either.
		return "virtio-fs VMs do not restore from templates (hypervisor.shared_fs)"
	}
	return ""
}

// PrepareTemplate makes sure the template for VMs that c and opts describe
// exists, building it if needed. Concurrent callers wait for one build. It
// returns nil and no error where templates do not apply. A caller that
// joins a pod's cgroup should call it first: a template's RAM is charged to
// the cgroup that builds it, and belongs to no pod.
func PrepareTemplate(ctx context.Context, c *vmconfig.Config, opts Options) (*Template, error) {
	b, err := plan(ctx, c, opts.ID)
	if err != nil {
		return nil, err
	}
	if templateUsable(c, b) != "" {
		return nil, nil
	}
	return ensureTemplate(ctx, c, b, withOptions(b.hypervisor, opts))
}

// ensureTemplate returns the template for VMs like hc, built if missing.
func ensureTemplate(ctx context.Context, c *vmconfig.Config, b bootPlan, hc hypervisor.Config) (*Template, error) {
	shape, key, err := templateShape(hc)
	if err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	root, err := templateRoot(c.Template.Dir)
	if err != nil {
		return nil, err
	}
	t := &Template{Dir: filepath.Join(root, key[:32]), Key: key}
	if t.ready() {
		return t, nil
	}
	unlock, err := lockTemplates(ctx, root)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if t.ready() {
		return t, nil
	}
	start := time.Now()
	if err := buildTemplate(ctx, c, b, shape, t); err != nil {
		return nil, err
	}
	log.G(ctx).WithField("template", filepath.Base(t.Dir)).WithField("took", time.Since(start)).Info("built a VM template")
	pruneTemplates(ctx, root, c.Template.Max, t.Dir)
	return t, nil
}

// ready says whether the template is complete, and marks it used.
func (t *Template) ready() bool {
	if _, err := os.Stat(t.state()); err != nil {
		return false
	}
	now := time.Now()
	_ = os.Chtimes(t.Dir, now, now)
	return true
}

// lockTemplates serializes template builds on the node.
func lockTemplates(ctx context.Context, root string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(root, ".lock"), os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("template lock: %w", err)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("template lock: %w", err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("wait for another template build: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// buildTemplate boots a VM of the template's shape with its RAM in a shared
// file, waits for the agent to say it is ready for its boot record, and
// saves the device state beside the RAM. It is built in a directory of its
// own and renamed into place when complete.
func buildTemplate(ctx context.Context, c *vmconfig.Config, b bootPlan, shape hypervisor.Config, t *Template) (retErr error) {
	tmp, err := os.MkdirTemp(filepath.Dir(t.Dir), ".build-")
	if err != nil {
		return fmt.Errorf("template: %w", err)
	}
	defer func() {
		if retErr != nil {
			os.RemoveAll(tmp)
		}
	}()
	build := &Template{Dir: tmp, Key: t.Key}
	shape.ID = "podvm-template"
	shape.Memory = &hypervisor.MemoryFile{Path: build.memory(), Shared: true}
	shape.Shares = append([]hypervisor.Share(nil), shape.Shares...)
	for i := range shape.Shares {
		// An empty directory: the guest has mounted nothing yet.
		shape.Shares[i].Path = filepath.Join(tmp, "share")
	}
	if err := os.Mkdir(filepath.Join(tmp, "share"), 0o700); err != nil {
		return fmt.Errorf("template: %w", err)
	}
	logger := log.G(ctx).WithField("vm", shape.ID)
	shape.Console = limitConsole("guest console", func(line string) { logger.Debug("guest: " + line) })
	shape.Stderr = limitConsole("qemu", func(line string) { logger.Info("qemu: " + line) })
	ctx, cancel := context.WithTimeout(ctx, c.Timeouts.Boot.Duration)
	defer cancel()
	v, err := hypervisor.Start(ctx, shape)
	if err != nil {
		return fmt.Errorf("template: %w", err)
	}
	defer v.Stop(context.Background(), 0)
	if err := awaitReady(ctx, v); err != nil {
		return fmt.Errorf("template: %w%s", err, consoleTail(v))
	}
	f, err := os.OpenFile(build.state(), os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("template: %w", err)
	}
	err = v.SaveState(ctx, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("template: %w", err)
	}
	if err := v.Stop(ctx, 0); err != nil {
		return fmt.Errorf("template: %w", err)
	}
	os.RemoveAll(t.Dir) // a partial one, from a build that was killed
	if err := os.Rename(tmp, t.Dir); err != nil {
		return fmt.Errorf("template: %w", err)
	}
	return nil
}

// awaitReady waits for the agent's ready byte on the secret port.
func awaitReady(ctx context.Context, v *hypervisor.VM) error {
	c, err := v.Port(agentapi.SecretPortName)
	if err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetReadDeadline(dl)
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return fmt.Errorf("the template's agent never said it was ready: %w", err)
	}
	if b[0] != agentapi.ReadyByte {
		return fmt.Errorf("the template's agent said %q, not that it was ready", b[0])
	}
	return nil
}

// pruneTemplates keeps the max most recently used templates (keep among
// them) and removes leftovers of builds that died.
func pruneTemplates(ctx context.Context, root string, max int, keep string) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return
	}
	type tmpl struct {
		path string
		used time.Time
	}
	var ts []tmpl
	for _, e := range entries {
		path := filepath.Join(root, e.Name())
		switch {
		case !e.IsDir():
		case e.Name()[0] == '.':
			// Builds happen under the lock this caller holds.
			os.RemoveAll(path)
		case path != keep:
			if info, err := e.Info(); err == nil {
				ts = append(ts, tmpl{path, info.ModTime()})
			}
		}
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].used.After(ts[j].used) })
	for i, t := range ts {
		if i+1 >= max {
			log.G(ctx).WithField("template", filepath.Base(t.path)).Info("removing the least recently used VM template")
			// A VM restored from it keeps its mapping of the RAM.
			os.RemoveAll(t.path)
		}
	}
}

// templateRoot makes sure dir is podvm's alone: a directory (not a link)
// owned by root that no one else may write, created so if missing. The
// default lives in /dev/shm, which anyone may write: a directory someone
// else made there is refused (templates are then off, with the reason),
// never used, since whoever writes a template runs code in every pod.
func templateRoot(dir string) (string, error) {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("template directory: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return "", fmt.Errorf("template directory: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Uid != uint32(os.Geteuid()) || st.Mode&0o022 != 0 {
		return "", fmt.Errorf("template directory %s is not a directory of this user's that only it may write: remove it or set template.dir", dir)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err == nil && fs.Type != unix.TMPFS_MAGIC {
		log.L.WithField("dir", dir).Debug("the template directory is not on tmpfs: templates' RAM goes through the disk's page cache")
	}
	return dir, nil
}

// RemoveTemplates removes every template.
func RemoveTemplates(c *vmconfig.Config) error {
	return os.RemoveAll(c.Template.Dir)
}

// Templates lists the templates.
func Templates(c *vmconfig.Config) ([]Template, error) {
	root := c.Template.Dir
	entries, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ts []Template
	for _, e := range entries {
		t := Template{Dir: filepath.Join(root, e.Name()), Key: e.Name()}
		if e.IsDir() && e.Name()[0] != '.' {
			ts = append(ts, t)
		}
	}
	return ts, nil
}
