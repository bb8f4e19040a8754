package harness

import (
	"os"
	"path/filepath"
)

// DeployPrefix lays out what deploy/'s installer image holds, as `make
// deploy-image` does, from the tree's shim (installed as bin/binary) and
// guest assets in dir/prefix, for install.WriteImage. It returns the
// prefix and what it holds (path below the prefix -> source file). (The
// install package's own tests use the harness: it cannot be imported
// here.)
func DeployPrefix(dir, binary string) (prefix string, sources map[string]string, err error) {
	prefix = filepath.Join(dir, "prefix")
	kernel, initramfs := Assets()
	sources = map[string]string{
		"bin/" + binary:                   ShimBinary(),
		"share/podvm/vmlinux":             kernel,
		"share/podvm/vmlinux.version":     kernel + ".version",
		"share/podvm/initramfs.cpio":      initramfs,
		"share/podvm/busybox":             "/bin/busybox",
		"share/podvm/config.toml.example": filepath.Join(RepoRoot(), "config", "config.toml"),
	}
	for dst, src := range sources {
		if err := copyFile(src, filepath.Join(prefix, dst)); err != nil {
			return "", nil, err
		}
	}
	return prefix, sources, nil
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}
