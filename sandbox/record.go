package sandbox

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Record is what `containerd-shim-podvm-v2 delete` needs to clean up
// after a crashed shim, kept in each container's bundle when the shim
// takes it: the configuration may have changed or stopped parsing since,
// and the spec's annotations may no longer say which pod the container
// was in.
type Record struct {
	SandboxID  string `json:"sandbox_id"`
	SandboxDir string `json:"sandbox_dir"`
	// ShareDir is the container's directory in the sandbox's share
	// (see shareDirName); empty in records written before it existed,
	// when it was the container's ID.
	ShareDir string `json:"share_dir,omitempty"`
}

// RecordName is the record's file in a bundle.
const RecordName = "podvm.json"

// WriteRecord writes the record into a bundle.
func WriteRecord(bundle string, r Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	path := filepath.Join(bundle, RecordName)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("record the sandbox in the bundle: %w", err)
	}
	return os.Rename(tmp, path)
}

// ReadRecord reads a bundle's record.
func ReadRecord(bundle string) (Record, error) {
	var r Record
	b, err := os.ReadFile(filepath.Join(bundle, RecordName))
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%s: %w", RecordName, err)
	}
	if err := CheckID("sandbox ID", r.SandboxID); err != nil || !filepath.IsAbs(r.SandboxDir) || filepath.Base(r.SandboxDir) != r.SandboxID {
		return r, fmt.Errorf("%s names no valid sandbox: %+v", RecordName, r)
	}
	if r.ShareDir != "" && (r.ShareDir != filepath.Base(r.ShareDir) || r.ShareDir == "." || r.ShareDir == "..") {
		return r, fmt.Errorf("%s names no valid directory in the share: %+v", RecordName, r)
	}
	return r, nil
}
