package install

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/podvm/podvm/vmconfig"
)

// Binary is the shim's file name: containerd derives it from RuntimeType.
const Binary = "containerd-shim-podvm-v2"

// Assets are the files of share/podvm a node needs; busybox is the debug
// console's shell.
var Assets = []string{"vmlinux", "vmlinux.version", "initramfs.cpio", "busybox", "config.toml.example"}

// Node describes an installation onto a node.
type Node struct {
	// Root is the node's root directory: "/" on the node itself, the
	// hostPath mount (/host) from deploy/'s DaemonSet. Every other path is
	// inside it.
	Root string
	// Source is the prefix holding bin/ and share/podvm/ to copy from.
	Source string
	// Prefix is where they go, such as /opt/podvm.
	Prefix string
	// LinkDir gets a symlink to the binary, for a Prefix outside
	// containerd's PATH ("" for none).
	LinkDir string
	// ContainerdConfig is containerd's configuration file.
	ContainerdConfig string
	// ContainerdMajor is the node containerd's major version (for a
	// missing config file).
	ContainerdMajor int
	// RuntimeName is the CRI runtime (the RuntimeClass handler).
	RuntimeName string
	// Log receives one line per change.
	Log func(format string, args ...any)
}

func (n *Node) path(p string) string { return filepath.Join(n.Root, p) }

func (n *Node) logf(format string, args ...any) {
	if n.Log != nil {
		n.Log(format, args...)
	}
}

// Install copies the binary and assets, writes /etc/podvm/config.toml if
// there is none, and adds the runtime to containerd's configuration. It is
// idempotent; it reports whether containerd's configuration changed (and
// containerd must be restarted to see it).
func (n *Node) Install() (bool, error) {
	// Check containerd's configuration before touching anything, so that
	// a refusal leaves the node as it was.
	cc, err := ReadContainerdConfig(n.Root, n.ContainerdConfig, n.ContainerdMajor)
	if err != nil {
		return false, err
	}
	changed, err := cc.AddRuntime(n.RuntimeName)
	if err != nil {
		return false, err
	}
	files := []string{filepath.Join("bin", Binary)}
	for _, a := range Assets {
		files = append(files, filepath.Join("share", "podvm", a))
	}
	for _, f := range files {
		if err := n.copy(filepath.Join(n.Source, f), n.path(filepath.Join(n.Prefix, f))); err != nil {
			return false, err
		}
	}
	if n.LinkDir != "" {
		if err := n.link(); err != nil {
			return false, err
		}
	}
	conf := n.path("/etc/podvm/config.toml")
	if _, err := os.Stat(conf); errors.Is(err, os.ErrNotExist) {
		if err := n.copy(filepath.Join(n.Source, "share", "podvm", "config.toml.example"), conf); err != nil {
			return false, err
		}
	}
	if changed {
		if err := cc.Write(); err != nil {
			return false, err
		}
		n.logf("added runtime %q to %s", n.RuntimeName, cc.Where())
	}
	return changed, nil
}

// Uninstall undoes Install: the runtime leaves containerd's configuration
// and the files go, except a /etc/podvm/config.toml an operator changed.
func (n *Node) Uninstall() (bool, error) {
	cc, err := ReadContainerdConfig(n.Root, n.ContainerdConfig, n.ContainerdMajor)
	if err != nil {
		return false, err
	}
	where := cc.Where()
	changed := cc.RemoveRuntime()
	if changed {
		if err := cc.Write(); err != nil {
			return false, err
		}
		n.logf("removed the podvm runtime from %s", where)
	}
	conf := n.path("/etc/podvm/config.toml")
	// The VM templates go too: they are a cache of what podvm booted.
	templates := vmconfig.Default().Template.Dir
	if c, err := vmconfig.LoadFile(conf); err == nil {
		templates = c.Template.Dir
	}
	if removeTemplates(n.path(templates)) {
		n.logf("removed the VM templates in %s", templates)
	}
	example := n.path(filepath.Join(n.Prefix, "share", "podvm", "config.toml.example"))
	if same(conf, example) {
		n.remove(conf)
		os.Remove(filepath.Dir(conf))
	}
	if n.LinkDir != "" {
		link := n.path(filepath.Join(n.LinkDir, Binary))
		if t, err := os.Readlink(link); err == nil && t == filepath.Join(n.Prefix, "bin", Binary) {
			n.remove(link)
		}
	}
	n.remove(n.path(filepath.Join(n.Prefix, "bin", Binary)))
	for _, a := range Assets {
		n.remove(n.path(filepath.Join(n.Prefix, "share", "podvm", a)))
	}
	for _, d := range []string{"share/podvm", "share", "bin", ""} {
		// Only if empty: the prefix may hold more than podvm.
		os.Remove(n.path(filepath.Join(n.Prefix, d)))
	}
	return changed, nil
}

// copy installs src at dst by renaming a complete copy into place: a shim
// that is running keeps its old file, a new one gets the new file whole.
func (n *Node) copy(src, dst string) error {
	if same(src, dst) {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("install %s: %w (the installer needs bin/ and share/podvm/ under its source prefix)", filepath.Base(src), err)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("install %s: %w", dst, err)
	}
	tmp := dst + ".podvm-tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, st.Mode().Perm())
	if err != nil {
		return fmt.Errorf("install %s: %w", dst, err)
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("install %s: %w", dst, err)
	}
	n.logf("installed %s", strings.TrimPrefix(dst, filepath.Clean(n.Root)))
	return nil
}

func (n *Node) link() error {
	link := n.path(filepath.Join(n.LinkDir, Binary))
	target := filepath.Join(n.Prefix, "bin", Binary)
	if filepath.Clean(n.LinkDir) == filepath.Dir(target) {
		return nil
	}
	if t, err := os.Readlink(link); err == nil && t == target {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		return err
	}
	if _, err := os.Lstat(link); err == nil {
		return fmt.Errorf("%s exists and is not podvm's link to %s: remove it or install with --prefix %s", link, target, filepath.Dir(n.LinkDir))
	}
	if err := os.Symlink(target, link); err != nil {
		return fmt.Errorf("link %s: %w", link, err)
	}
	n.logf("linked %s -> %s", filepath.Join(n.LinkDir, Binary), target)
	return nil
}

func (n *Node) remove(p string) {
	if err := os.Remove(p); err == nil {
		n.logf("removed %s", strings.TrimPrefix(p, filepath.Clean(n.Root)))
	}
}

// removeTemplates removes what podvm keeps in a template directory (the
// templates, their lock, builds that died), then the directory if that
// left it empty. Nothing else: the directory is the configuration's word.
func removeTemplates(dir string) bool {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		name := e.Name()
		if name == ".lock" || strings.HasPrefix(name, ".build-") || (len(name) == 32 && strings.Trim(name, "0123456789abcdef") == "") {
			os.RemoveAll(filepath.Join(dir, name))
		}
	}
	return os.Remove(dir) == nil
}

// same reports whether two files have the same contents.
func same(a, b string) bool {
	x, err := os.ReadFile(a)
	if err != nil {
		return false
	}
	y, err := os.ReadFile(b)
	return err == nil && bytes.Equal(x, y)
}
