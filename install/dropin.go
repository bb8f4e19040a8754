package install

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/BurntSushi/toml"
)

// containerd 2.2 and later generate a config that imports
// /etc/containerd/conf.d/*.toml, and merge what those files add to it.
// Where containerd's config imports such a directory, podvm's runtime goes
// into a file of its own there, which uninstall removes whole: config.toml
// stays as the operator wrote it. Only version 3 configs: containerd 1.x
// replaces a plugin's whole table with an imported one's.

// dropInName is podvm's file in the imported directory.
const dropInName = "podvm.toml"

// dropInHeader opens podvm's drop-in; a file without it is not podvm's.
const dropInHeader = "# The podvm runtime, written by `containerd-shim-podvm-v2 install`;\n# `containerd-shim-podvm-v2 uninstall` removes this file.\n"

// dropIn is podvm's drop-in file: where it goes, what it holds on disk,
// and what is to be written.
type dropIn struct {
	path string // on the node; "" when the config imports no directory
	text string // on disk
	tree map[string]any
	// want is the text to write, "" to remove the file; pending says
	// there is something to do.
	want    string
	pending bool
}

// readDropIn finds the directory the config imports and reads podvm's
// file there.
func (c *ContainerdConfig) readDropIn() error {
	if c.Version < 3 {
		return nil
	}
	imports, _ := c.tree["imports"].([]any)
	for _, i := range imports {
		pattern, _ := i.(string)
		if pattern == "" {
			continue
		}
		if !filepath.IsAbs(pattern) {
			pattern = filepath.Join(filepath.Dir(c.Path), pattern)
		}
		candidate := filepath.Join(filepath.Dir(pattern), dropInName)
		if ok, _ := filepath.Match(pattern, candidate); ok {
			c.dropIn.path = candidate
			break
		}
	}
	if c.dropIn.path == "" {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(c.root, c.dropIn.path))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", c.dropIn.path, err)
	}
	if !strings.HasPrefix(string(b), dropInHeader) {
		return fmt.Errorf("%s exists and is not podvm's: move it away, then retry", c.dropIn.path)
	}
	c.dropIn.text = string(b)
	if _, err := toml.Decode(c.dropIn.text, &c.dropIn.tree); err != nil {
		return fmt.Errorf("%s is not valid TOML: %w (remove it, then retry)", c.dropIn.path, err)
	}
	return nil
}

// set makes the drop-in hold stanza.
func (d *dropIn) set(stanza string) {
	d.want, d.pending = dropInHeader+"version = 3\n\n"+stanza, true
	d.tree = map[string]any{}
	toml.Decode(d.want, &d.tree)
}

// remove drops the drop-in, and reports whether there was one.
func (d *dropIn) remove() bool {
	if d.text == "" && d.want == "" {
		return false
	}
	d.want, d.pending, d.tree = "", true, nil
	return true
}

func (d *dropIn) write(root string) error {
	if !d.pending {
		return nil
	}
	path := filepath.Join(root, d.path)
	if d.want == "" {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	} else if err := writeAtomic(path, d.want); err != nil {
		return fmt.Errorf("write %s: %w", d.path, err)
	}
	d.text, d.pending = d.want, false
	return nil
}

// Where is the file podvm's runtime goes into: its drop-in, else the
// config itself.
func (c *ContainerdConfig) Where() string {
	if c.dropIn.path != "" {
		return c.dropIn.path
	}
	return c.Path
}
