package install

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/podvm/podvm/oci"
)

// ImageName is what deploy/'s DaemonSet runs: `make deploy-image` writes it
// for `ctr -n k8s.io image import` on each node, or for a registry.
const ImageName = "docker.io/podvm/podvm-deploy:latest"

// ImagePrefix is where the image holds podvm; its entrypoint is the shim's
// install subcommand, which copies from there.
const ImagePrefix = "/opt/podvm"

// WriteImage writes the installer image to path: the binary and assets of
// the source prefix under ImagePrefix, entrypoint `install`.
func WriteImage(path, source string) error {
	root, err := os.MkdirTemp("", "podvm-deploy-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	n := &Node{Root: root, Source: source, Prefix: ImagePrefix}
	files := []string{filepath.Join("bin", Binary)}
	for _, a := range Assets {
		files = append(files, filepath.Join("share", "podvm", a))
	}
	for _, f := range files {
		if err := n.copy(filepath.Join(source, f), n.path(filepath.Join(ImagePrefix, f))); err != nil {
			return fmt.Errorf("installer image: %w", err)
		}
	}
	return oci.WriteImage(path, ImageName, root, oci.Config{
		Entrypoint: []string{filepath.Join(ImagePrefix, "bin", Binary), "install"},
	})
}
