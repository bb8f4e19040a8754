package install

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
	strict "github.com/pelletier/go-toml/v2"
)

// RuntimeType is the runtime_type containerd runs podvm's shim for.
const RuntimeType = "io.containerd.podvm.v2"

// DefaultContainerdConfig is where containerd reads its configuration.
const DefaultContainerdConfig = "/etc/containerd/config.toml"

// criPlugins are the plugin tables that hold CRI's runtimes, by config
// version: containerd 1.x writes version 2, containerd 2.x version 3.
var criPlugins = map[int]string{
	2: "io.containerd.grpc.v1.cri",
	3: "io.containerd.cri.v1.runtime",
}

// Markers around the stanza install appends, so that uninstall removes
// exactly what it added and nothing an operator wrote.
const (
	beginMarker = "# BEGIN podvm runtime (containerd-shim-podvm-v2 install; `containerd-shim-podvm-v2 uninstall` removes it)"
	endMarker   = "# END podvm runtime"
)

// ContainerdConfig is containerd's configuration file, as far as podvm's
// runtime is concerned.
type ContainerdConfig struct {
	Path    string // on the node
	Version int    // 2 or 3
	root    string // the node's root
	text    string
	tree    map[string]any
	changed bool // text differs from the file
	// dropIn is podvm's own file among those the config imports, if it
	// imports a directory (containerd 2.2+'s conf.d); see dropin.go.
	dropIn dropIn
}

// ReadContainerdConfig reads containerd's configuration at path on the node
// whose root is root ("/" on the node itself). A missing or empty file
// takes the layout of the containerd that will read it (containerdMajor 1
// or 2; 0 if unknown). Version 1 layouts are refused: containerd 1.x still
// reads them but they have no place for runtime options.
func ReadContainerdConfig(root, path string, containerdMajor int) (*ContainerdConfig, error) {
	b, err := os.ReadFile(filepath.Join(root, path))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read containerd config: %w", err)
	}
	c := &ContainerdConfig{Path: path, root: root, text: string(b), tree: map[string]any{}}
	if _, err := toml.Decode(c.text, &c.tree); err != nil {
		return nil, fmt.Errorf("containerd config %s is not valid TOML: %w (fix it, then retry)", path, err)
	}
	switch v := c.tree["version"].(type) {
	case int64:
		c.Version = int(v)
	case nil:
		if len(c.tree) > 0 {
			c.Version = 1
			break
		}
		switch containerdMajor {
		case 1:
			c.Version = 2
		case 2:
			c.Version = 3
		default:
			return nil, fmt.Errorf("containerd config %s is empty and containerd's version is unknown: add `version = 2` (containerd 1.x) or `version = 3` (containerd 2.x) to it", path)
		}
		c.text = fmt.Sprintf("version = %d\n", c.Version) + c.text
	default:
		return nil, fmt.Errorf("containerd config %s: version = %v is not a number", path, v)
	}
	if _, ok := criPlugins[c.Version]; !ok {
		return nil, fmt.Errorf("containerd config %s is version %d; podvm supports versions 2 and 3: convert it with `containerd config migrate`", path, c.Version)
	}
	if err := c.readDropIn(); err != nil {
		return nil, err
	}
	return c, nil
}

// ContainerdMajor is the major version of the containerd binary at path
// (its `--version` output), 0 if it cannot tell.
func ContainerdMajor(versionOutput string) int {
	for _, f := range strings.Fields(versionOutput) {
		f = strings.TrimPrefix(f, "v")
		if len(f) > 2 && f[1] == '.' && f[0] >= '1' && f[0] <= '9' {
			return int(f[0] - '0')
		}
	}
	return 0
}

// runtimesPath is the table of CRI's runtimes in the file's layout.
func (c *ContainerdConfig) runtimesPath() []string {
	return []string{"plugins", criPlugins[c.Version], "containerd", "runtimes"}
}

// runtimes are CRI's runtimes in the file and in podvm's drop-in.
func (c *ContainerdConfig) runtimes() map[string]any {
	out := map[string]any{}
	maps.Copy(out, runtimesIn(c.tree, c.runtimesPath()))
	maps.Copy(out, runtimesIn(c.dropIn.tree, c.runtimesPath()))
	return out
}

func runtimesIn(tree map[string]any, path []string) map[string]any {
	var t any = tree
	for _, k := range path {
		m, ok := t.(map[string]any)
		if !ok {
			return nil
		}
		t = m[k]
	}
	m, _ := t.(map[string]any)
	return m
}

// PodvmRuntimes names the CRI runtimes whose runtime_type is podvm's.
func (c *ContainerdConfig) PodvmRuntimes() []string {
	var names []string
	for name, r := range c.runtimes() {
		if m, ok := r.(map[string]any); ok && m["runtime_type"] == RuntimeType {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

// PassesAnnotations reports whether the named runtime lets pods'
// io.podvm.config.* annotations through to the shim: its pod_annotations
// do, and the Sandbox API (sandboxer = "shim") gives the shim them all.
func (c *ContainerdConfig) PassesAnnotations(name string) bool {
	r, _ := c.runtimes()[name].(map[string]any)
	if r["sandboxer"] == "shim" {
		return true
	}
	list, _ := r["pod_annotations"].([]any)
	for _, a := range list {
		if a == "io.podvm.config.*" || a == "*" {
			return true
		}
	}
	return false
}

// Stanza is the runtime table for a config version: the one the README
// shows for version 2.
func Stanza(version int, name string) string {
	return fmt.Sprintf("[plugins.%q.containerd.runtimes.%s]\n  runtime_type = %q\n  pod_annotations = [\"io.podvm.config.*\"]\n",
		criPlugins[version], name, RuntimeType)
}

// AddRuntime adds the podvm runtime under name. It reports false if a
// runtime of that name already runs podvm; a runtime of that name that runs
// something else is an error.
func (c *ContainerdConfig) AddRuntime(name string) (bool, error) {
	if r, ok := c.runtimes()[name]; ok {
		if m, _ := r.(map[string]any); m["runtime_type"] == RuntimeType {
			return false, nil
		}
		return false, fmt.Errorf("containerd config %s already has a runtime %q that is not podvm's: choose another name (--runtime-name)", c.Path, name)
	}
	if c.dropIn.path != "" {
		c.dropIn.set(Stanza(c.Version, name))
		return true, nil
	}
	text := c.text
	if text != "" && !strings.HasSuffix(text, "\n") {
		text += "\n"
	}
	text += "\n" + beginMarker + "\n" + Stanza(c.Version, name) + endMarker + "\n"
	// containerd's own TOML parser (go-toml) is stricter than this
	// package's: it refuses, as the TOML spec does, a table that extends
	// an inline one. Both must accept the result.
	tree := map[string]any{}
	_, err := toml.Decode(text, &tree)
	if err == nil {
		err = strict.Unmarshal([]byte(text), &map[string]any{})
	}
	if err != nil {
		// A layout the appended table clashes with (an inline table of
		// runtimes, say): leave the file alone.
		return false, fmt.Errorf("containerd config %s: adding the podvm runtime would make it invalid (%v): add this by hand:\n%s", c.Path, err, Stanza(c.Version, name))
	}
	c.text, c.tree, c.changed = text, tree, true
	return true, nil
}

// RemoveRuntime removes the stanzas AddRuntime wrote; it reports whether
// there were any.
func (c *ContainerdConfig) RemoveRuntime() bool {
	var out []string
	removed, in := false, false
	for _, line := range strings.SplitAfter(c.text, "\n") {
		switch {
		case strings.TrimSpace(line) == beginMarker:
			in, removed = true, true
			// The blank line AddRuntime put before the block.
			if n := len(out); n > 0 && strings.TrimSpace(out[n-1]) == "" {
				out = out[:n-1]
			}
		case in && strings.TrimSpace(line) == endMarker:
			in = false
		case !in:
			out = append(out, line)
		}
	}
	if removed {
		c.text = strings.Join(out, "")
		c.tree = map[string]any{}
		toml.Decode(c.text, &c.tree)
		c.changed = true
	}
	return c.dropIn.remove() || removed
}

// Text is the configuration as it would be written.
func (c *ContainerdConfig) Text() string { return c.text }

// Write writes what changed: the file (replaced atomically, keeping its
// mode) and podvm's drop-in.
func (c *ContainerdConfig) Write() error {
	if c.changed {
		if err := writeAtomic(filepath.Join(c.root, c.Path), c.text); err != nil {
			return fmt.Errorf("write containerd config: %w", err)
		}
		c.changed = false
	}
	return c.dropIn.write(c.root)
}

// writeAtomic replaces path by a complete new file, keeping its mode.
func writeAtomic(path, text string) error {
	mode := os.FileMode(0o644)
	if st, err := os.Stat(path); err == nil {
		mode = st.Mode().Perm()
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".podvm-tmp"
	if err := os.WriteFile(tmp, []byte(text), mode); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
