package shim

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// bundleRecord is what `containerd-shim-podvm-v2 delete` needs to clean up
// after a crashed shim, kept in each container's bundle when the shim
// takes it: the configuration may have changed or stopped parsing since,
// and the spec's annotations may no longer say which pod the container
// was in.
type bundleRecord struct {
	SandboxID  string `json:"sandbox_id"`
	SandboxDir string `json:"sandbox_dir"`
}

const bundleRecordName = "podvm.json"

func writeBundleRecord(bundle string, r bundleRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	path := filepath.Join(bundle, bundleRecordName)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("record the sandbox in the bundle: %w", err)
	}
	return os.Rename(tmp, path)
}

func readBundleRecord(bundle string) (bundleRecord, error) {
	var r bundleRecord
	b, err := os.ReadFile(filepath.Join(bundle, bundleRecordName))
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%s: %w", bundleRecordName, err)
	}
	if err := checkID("sandbox ID", r.SandboxID); err != nil || !filepath.IsAbs(r.SandboxDir) || filepath.Base(r.SandboxDir) != r.SandboxID {
		return r, fmt.Errorf("%s names no valid sandbox: %+v", bundleRecordName, r)
	}
	return r, nil
}
