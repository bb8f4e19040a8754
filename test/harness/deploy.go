package harness

import (
	"os"
	"path/filepath"

	"github.com/podvm/podvm/install"
)

// WriteDeployImage writes deploy/'s installer image, as `make
// deploy-image` would, from the tree's shim and guest assets into dir, and
// returns the tarball and what it installs (path below the prefix ->
// source file).
func WriteDeployImage(dir string) (tarball string, sources map[string]string, err error) {
	prefix := filepath.Join(dir, "prefix")
	kernel, initramfs := Assets()
	sources = map[string]string{
		"bin/" + install.Binary:           ShimBinary(),
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
	tarball = filepath.Join(dir, "podvm-deploy.tar")
	return tarball, sources, install.WriteImage(tarball, prefix)
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
