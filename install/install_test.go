package install

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/podvm/podvm/test/harness"
)

// debianV2 is the shape of a containerd 1.x config with CRI runtimes.
const debianV2 = `version = 2
root = "/var/lib/containerd"

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.9"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes]
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
          runtime_type = "io.containerd.runc.v2"
          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
            SystemdCgroup = true
`

// containerdV3 is the shape of containerd 2.x's `config default`.
const containerdV3 = `version = 3
root = '/var/lib/containerd'

[plugins]
  [plugins.'io.containerd.cri.v1.runtime']
    enable_selinux = false
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes]
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
          runtime_type = 'io.containerd.runc.v2'
`

func TestContainerdConfigAddRemove(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		exists     bool
		major      int
		version    int
	}{
		{"v2", debianV2, true, 0, 2},
		{"v3", containerdV3, true, 0, 3},
		{"missing, containerd 1", "", false, 1, 2},
		{"missing, containerd 2", "", false, 2, 3},
		{"comments only", "# nothing yet\n", true, 2, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.toml")
			if tc.exists {
				os.WriteFile(path, []byte(tc.text), 0o600)
			}
			c, err := ReadContainerdConfig("/", path, tc.major)
			if err != nil {
				t.Fatal(err)
			}
			if c.Version != tc.version {
				t.Errorf("version %d, want %d", c.Version, tc.version)
			}
			if got := c.PodvmRuntimes(); len(got) != 0 {
				t.Errorf("podvm runtimes before: %v", got)
			}
			if changed, err := c.AddRuntime("podvm"); err != nil || !changed {
				t.Fatalf("AddRuntime: %v %v", changed, err)
			}
			if err := c.Write(); err != nil {
				t.Fatal(err)
			}
			if st, _ := os.Stat(path); tc.exists && st.Mode().Perm() != 0o600 {
				t.Errorf("mode %v, want the file's 0600", st.Mode())
			}
			c, err = ReadContainerdConfig("/", path, 0)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.PodvmRuntimes(); !reflect.DeepEqual(got, []string{"podvm"}) || !c.PassesAnnotations("podvm") {
				t.Errorf("podvm runtimes after: %v\n%s", got, c.Text())
			}
			if changed, err := c.AddRuntime("podvm"); err != nil || changed {
				t.Errorf("AddRuntime again: %v %v", changed, err)
			}
			if !c.RemoveRuntime() {
				t.Fatal("RemoveRuntime found nothing")
			}
			want := tc.text
			if !tc.exists || !strings.Contains(tc.text, "version") {
				want = "version = " + string(rune('0'+tc.version)) + "\n" + tc.text
			}
			if c.Text() != want {
				t.Errorf("after remove:\n%q\nwant\n%q", c.Text(), want)
			}
		})
	}
}

func TestContainerdConfigRefuses(t *testing.T) {
	for _, tc := range []struct{ name, text, want string }{
		{"v1", "[plugins.cri]\n  sandbox_image = \"x\"\n", "containerd config migrate"},
		{"bad TOML", "version = 2\n[plugins\n", "not valid TOML"},
		{"unknown containerd", "", "add `version = 2`"},
		{"name taken", debianV2 + "\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.podvm]\n  runtime_type = \"io.containerd.runc.v2\"\n", "--runtime-name"},
		{"inline runtimes", "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  runtimes = { runc = { runtime_type = \"io.containerd.runc.v2\" } }\n", "add this by hand"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.toml")
			os.WriteFile(path, []byte(tc.text), 0o644)
			c, err := ReadContainerdConfig("/", path, 0)
			if err == nil {
				_, err = c.AddRuntime("podvm")
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
			if b, _ := os.ReadFile(path); string(b) != tc.text {
				t.Errorf("file changed: %q", b)
			}
		})
	}
}

// TestContainerdReadsStanza has the containerd on this machine (1.x) read a
// config with the runtime added: its merged configuration has podvm's.
func TestContainerdReadsStanza(t *testing.T) {
	_, err := exec.LookPath("containerd")
	harness.Need(t, err == nil, "containerd is missing (make deps)")
	path := filepath.Join(t.TempDir(), "config.toml")
	os.WriteFile(path, []byte(debianV2), 0o644)
	c, err := ReadContainerdConfig("/", path, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddRuntime("podvm"); err != nil {
		t.Fatal(err)
	}
	c.Write()
	out, err := exec.Command("containerd", "--config", path, "config", "dump").CombinedOutput()
	if err != nil {
		t.Fatalf("containerd config dump: %v: %s", err, out)
	}
	dump := string(out)
	i := strings.Index(dump, `[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.podvm]`)
	if i < 0 || !strings.Contains(dump[i:], `runtime_type = "io.containerd.podvm.v2"`) || !strings.Contains(dump[i:], `pod_annotations = ["io.podvm.config.*"]`) {
		t.Errorf("containerd's merged config lacks the podvm runtime:\n%s", dump)
	}
}

func TestNode(t *testing.T) {
	src := t.TempDir()
	files := map[string]string{"bin/" + Binary: "shim"}
	for _, a := range Assets {
		files["share/podvm/"+a] = "asset " + a
	}
	for f, body := range files {
		os.MkdirAll(filepath.Join(src, filepath.Dir(f)), 0o755)
		os.WriteFile(filepath.Join(src, f), []byte(body), 0o755)
	}
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc/containerd"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/containerd/config.toml"), []byte(debianV2), 0o644)
	n := &Node{Root: root, Source: src, Prefix: "/opt/podvm", LinkDir: "/usr/local/bin",
		ContainerdConfig: DefaultContainerdConfig, RuntimeName: "podvm", Log: t.Logf}

	for i, want := range []bool{true, false} {
		changed, err := n.Install()
		if err != nil || changed != want {
			t.Fatalf("install %d: changed %v, %v", i, changed, err)
		}
	}
	for f, body := range files {
		if b, err := os.ReadFile(filepath.Join(root, "opt/podvm", f)); string(b) != body {
			t.Errorf("%s: %q %v", f, b, err)
		}
	}
	if target, err := os.Readlink(filepath.Join(root, "usr/local/bin", Binary)); target != "/opt/podvm/bin/"+Binary {
		t.Errorf("link: %q %v", target, err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc/podvm/config.toml")); string(b) != "asset config.toml.example" {
		t.Errorf("podvm config: %q", b)
	}

	// Templates the node built, and a file of someone else's beside them.
	tmpl := filepath.Join(root, "dev/shm/podvm-templates")
	os.MkdirAll(filepath.Join(tmpl, "0123456789abcdef0123456789abcdef"), 0o700)
	os.WriteFile(filepath.Join(tmpl, "0123456789abcdef0123456789abcdef", "memory"), []byte("ram"), 0o600)
	os.WriteFile(filepath.Join(tmpl, ".lock"), nil, 0o600)
	os.WriteFile(filepath.Join(tmpl, "notes.txt"), []byte("not podvm's"), 0o600)

	if changed, err := n.Uninstall(); err != nil || !changed {
		t.Fatalf("uninstall: %v %v", changed, err)
	}
	if _, err := os.Stat(filepath.Join(tmpl, "notes.txt")); err != nil {
		t.Errorf("uninstall removed a file that was not podvm's: %v", err)
	}
	if entries, _ := os.ReadDir(tmpl); len(entries) != 1 {
		t.Errorf("uninstall left %d entries in the template directory, want only notes.txt", len(entries))
	}
	os.RemoveAll(filepath.Join(root, "dev"))
	var left []string
	filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if !info.IsDir() {
			left = append(left, strings.TrimPrefix(p, root))
		}
		return nil
	})
	if !reflect.DeepEqual(left, []string{"/etc/containerd/config.toml"}) {
		t.Errorf("left after uninstall: %v", left)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc/containerd/config.toml")); string(b) != debianV2 {
		t.Errorf("containerd config after uninstall:\n%s", b)
	}
}

// containerdV3Imports is containerd 2.2+'s `config default`: it imports a
// drop-in directory.
func containerdV3Imports(dir string) string {
	return "version = 3\nimports = ['" + dir + "/conf.d/*.toml']\n" + strings.TrimPrefix(containerdV3, "version = 3\n")
}

// Where the config imports a directory, the runtime goes into a file of
// podvm's own there, config.toml is left alone, and uninstall removes the
// file; a podvm.toml that is not podvm's is left alone and refused.
func TestContainerdConfigDropIn(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	text := containerdV3Imports(dir)
	os.WriteFile(path, []byte(text), 0o644)
	c, err := ReadContainerdConfig("/", path, 2)
	if err != nil {
		t.Fatal(err)
	}
	dropIn := filepath.Join(dir, "conf.d", "podvm.toml")
	if c.Where() != dropIn {
		t.Fatalf("runtime goes to %s, want %s", c.Where(), dropIn)
	}
	if changed, err := c.AddRuntime("podvm"); err != nil || !changed {
		t.Fatalf("AddRuntime: %v %v", changed, err)
	}
	if err := c.Write(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != text {
		t.Errorf("config.toml changed:\n%s", b)
	}
	c, err = ReadContainerdConfig("/", path, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.PodvmRuntimes(); !reflect.DeepEqual(got, []string{"podvm"}) {
		t.Errorf("podvm runtimes with the drop-in: %v", got)
	}
	if changed, err := c.AddRuntime("podvm"); err != nil || changed {
		t.Errorf("AddRuntime again: %v %v", changed, err)
	}

	// containerd 2.x merges the drop-in into its configuration.
	if _, err := os.Stat(harness.Containerd2Bin()); err == nil {
		out, err := exec.Command(harness.Containerd2Bin(), "--config", path, "config", "dump").CombinedOutput()
		dump := string(out)
		i := strings.Index(dump, "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.podvm]")
		if err != nil || i < 0 || !strings.Contains(dump[i:], "runtime_type = 'io.containerd.podvm.v2'") || !strings.Contains(dump, "containerd.runtimes.runc]") {
			t.Errorf("containerd 2.x's merged config lacks the podvm runtime or runc's: %v\n%s", err, dump)
		}
	} else {
		t.Log("no containerd 2.x in build/tools (make deps): containerd's merge not checked")
	}

	if !c.RemoveRuntime() {
		t.Fatal("RemoveRuntime found nothing")
	}
	if err := c.Write(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dropIn); !os.IsNotExist(err) {
		t.Errorf("drop-in left after remove: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != text {
		t.Errorf("config.toml changed by remove:\n%s", b)
	}

	os.WriteFile(dropIn, []byte("# mine\n"), 0o644)
	if _, err := ReadContainerdConfig("/", path, 0); err == nil || !strings.Contains(err.Error(), "not podvm's") {
		t.Errorf("a foreign podvm.toml: %v", err)
	}
}
