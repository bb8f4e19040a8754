package agent

import (
	"os"
	"path/filepath"
	"testing"
)

// dirRuntime is a container backend that only has a cgroup directory.
type dirRuntime struct {
	backend
	dir string
}

func (r dirRuntime) cgroupDir() string { return r.dir }

// A Shutdown skips signalling only when no container's cgroup holds a
// process: one running, one being created or one whose cgroup cannot be
// read keeps the kill.
func TestEmptied(t *testing.T) {
	cgroup := func(events string) backend {
		dir := t.TempDir()
		if events != "" {
			if err := os.WriteFile(filepath.Join(dir, "cgroup.events"), []byte(events), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dirRuntime{dir: dir}
	}
	for _, tt := range []struct {
		name       string
		containers map[string]*container
		want       bool
	}{
		{"none", nil, true},
		{"exited", map[string]*container{"a": {rt: cgroup("populated 0\nfrozen 0\n")}}, true},
		{"running", map[string]*container{"a": {rt: cgroup("populated 0\nfrozen 0\n")}, "b": {rt: cgroup("populated 1\nfrozen 0\n")}}, false},
		{"creating", map[string]*container{"a": nil}, false},
		{"unreadable", map[string]*container{"a": {rt: cgroup("")}}, false},
		{"no cgroup", map[string]*container{"a": {rt: dirRuntime{}}}, false},
	} {
		s := &containerService{containers: tt.containers}
		if got := s.emptied(); got != tt.want {
			t.Errorf("%s: emptied() = %v, want %v", tt.name, got, tt.want)
		}
	}
}
