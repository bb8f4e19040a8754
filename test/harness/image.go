package harness

import (
	"os"

	"github.com/podvm/podvm/oci"
)

// BusyboxImage is the name the local busybox image is imported under (CRI
// would normalise local/busybox:latest to it).
const BusyboxImage = "docker.io/local/busybox:latest"

// PauseImage is the local stand-in for Kubernetes' pause image: busybox
// sleeping forever.
const PauseImage = "docker.io/local/pause:latest"

// WriteBusyboxImage writes a single-layer OCI image layout, as a tar that
// `ctr image import` takes, of a busybox root filesystem: no registry
// needed.
func WriteBusyboxImage(path, name string) error {
	return WriteImage(path, name, []string{"sh"})
}

// WriteImage is WriteBusyboxImage with the image's default command.
func WriteImage(path, name string, cmd []string) error {
	root, err := os.MkdirTemp("", "podvm-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	if err := BusyboxRootfs(root); err != nil {
		return err
	}
	return oci.WriteImage(path, name, root, oci.Config{Cmd: cmd})
}
