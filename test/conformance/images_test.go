//go:build conformance

package conformance

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/podvm/podvm/network"
	"github.com/podvm/podvm/oci"
	"github.com/podvm/podvm/test/harness"
)

// registryAddr is where the test's registry listens, inside containerd's
// network namespace: containerd pulls from it over plain HTTP for the
// registries critest names (mirrors), so every image keeps the name
// critest expects. (critest's --registry-prefix renames what it pulls but
// not what it creates containers from.)
const registryAddr = "localhost:5000"

// mirrored are the registries critest's images come from.
var mirrored = []string{"registry.k8s.io", "gcr.io", "k8s.gcr.io"}

// registryConfig writes containerd's hosts directory sending mirrored to
// the test's registry and returns the CRI configuration that uses it.
func registryConfig(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, r := range mirrored {
		if err := os.MkdirAll(filepath.Join(dir, r), 0o755); err != nil {
			t.Fatal(err)
		}
		hosts := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+registryAddr, "http://"+registryAddr)
		if err := os.WriteFile(filepath.Join(dir, r, "hosts.toml"), []byte(hosts), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	section := `"io.containerd.grpc.v1.cri".registry`
	if harness.Containerd2() {
		section = `"io.containerd.cri.v1.images".registry`
	}
	return fmt.Sprintf("\n[plugins.%s]\n  config_path = %q\n", section, dir)
}

// testImage is one image critest pulls, as cri-tools' images/build makes
// it, on a busybox root filesystem instead of the busybox image.
type testImage struct {
	refs   []string // below registryAddr
	user   string
	cmd    []string
	marker string // a file that makes the image differ from the others
	// nnp: the image holds /nnp, a setuid-root program that prints its
	// effective UID (cri-tools' nonewprivs image).
	nnp bool
}

// testImages are the images critest v1.37 asks for on Linux (its
// registry gcr.io/k8s-staging-cri-tools and the e2e images, under
// --registry-prefix), except the one it pulls by a digest only its own
// registry has.
func testImages() []testImage {
	const staging = "k8s-staging-cri-tools/"
	images := []testImage{
		{refs: []string{"e2e-test-images/busybox:1.29-2"}, cmd: []string{"sh"}},
		{refs: []string{"pause:3.9"}, cmd: []string{"sleep", "infinity"}, marker: "pause"},
		// nginx's place: a web server on port 80 (12003 for host
		// network), from busybox.
		{refs: []string{"e2e-test-images/nginx:1.14-2"}, cmd: webServer(80), marker: "nginx"},
		{refs: []string{"e2e-test-images/httpd:2.4.39-4"}, cmd: webServer(80), marker: "httpd"},
		{refs: []string{"e2e-test-images/nonewprivs:1.3"}, cmd: []string{"/nnp"}, marker: "nonewprivs", nnp: true},
		{refs: []string{staging + "hostnet-nginx-amd64:latest"}, cmd: webServer(12003), marker: "hostnet-nginx"},
		{refs: []string{staging + "test-image-user-uid:latest"}, user: "1002", cmd: []string{"sh"}, marker: "user-uid"},
		{refs: []string{staging + "test-image-user-username:latest"}, user: "www-data", cmd: []string{"sh"}, marker: "user-username"},
		{refs: []string{staging + "test-image-user-uid-group:latest"}, user: "1003:1004", cmd: []string{"sh"}, marker: "user-uid-group"},
		{refs: []string{staging + "test-image-user-username-group:latest"}, user: "www-data:1004", cmd: []string{"sh"}, marker: "user-username-group"},
		{refs: []string{staging + "test-image-predefined-group:latest"}, user: "1000", cmd: []string{"sh"}, marker: "predefined-group"},
		{refs: []string{staging + "test-image-tags:1", staging + "test-image-tags:2", staging + "test-image-tags:3"}, cmd: []string{"sh"}, marker: "same-image"},
		{refs: []string{staging + "test-image-tag:test", staging + "test-image-tag:all"}, cmd: []string{"sh"}, marker: "test-image-tag"},
	}
	for _, n := range []string{"test-image-1", "test-image-2", "test-image-3", "test-image-latest"} {
		images = append(images, testImage{refs: []string{staging + n + ":latest"}, cmd: []string{"sh"}, marker: n})
	}
	return images
}

// webServer serves a page on port as nginx's and httpd's images do for
// critest: it says so on stdout and leaves its PID in /var/run/nginx.pid.
func webServer(port int) []string {
	return []string{"sh", "-c", fmt.Sprintf("mkdir -p /www /var/run && echo '<h1>Welcome to nginx!</h1>' > /www/index.html && "+
		"echo $$ > /var/run/nginx.pid && echo 'httpd: serving on port %[1]d' && exec httpd -f -p %[1]d -h /www", port)}
}

// imageRootfs is the busybox root filesystem with the users and groups
// cri-tools' images have.
func imageRootfs(dir string) error {
	if err := harness.BusyboxRootfs(dir); err != nil {
		return err
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/bin/false\n" +
			"default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group": "root:x:0:\nwww-data:x:33:\ndefault-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\nnogroup:x:65534:\n",
	}
	for n, content := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return os.MkdirAll(filepath.Join(dir, "home", "default-user"), 0o755)
}

// buildImage makes one image: the shared base layer, a layer holding its
// marker file, and its configuration.
func buildImage(base v1.Layer, ti testImage) (v1.Image, error) {
	layers := []v1.Layer{base}
	if ti.marker != "" {
		dir, err := os.MkdirTemp("", "podvm-marker-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		if err := os.WriteFile(filepath.Join(dir, ti.marker), nil, 0o644); err != nil {
			return nil, err
		}
		if ti.nnp {
			if err := buildNNP(dir); err != nil {
				return nil, err
			}
		}
		l, err := layerOf(dir)
		if err != nil {
			return nil, err
		}
		layers = append(layers, l)
	}
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Cmd = ti.cmd
	cf.Config.User = ti.user
	cf.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	return mutate.ConfigFile(img, cf)
}

// buildNNP compiles /nnp into dir: static, setuid root.
func buildNNP(dir string) error {
	prog := "#include <stdio.h>\n#include <unistd.h>\nint main(void) { printf(\"Effective uid: %d\\n\", geteuid()); return 0; }\n"
	if err := harness.StaticC(prog, filepath.Join(dir, "nnp")); err != nil {
		return err
	}
	return os.Chmod(filepath.Join(dir, "nnp"), 0o4755)
}

func layerOf(dir string) (v1.Layer, error) {
	var buf bytes.Buffer
	if err := oci.WriteLayer(&buf, dir); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
}

// startRegistry serves an in-memory registry holding testImages on
// registryAddr inside the network namespace at nsPath, until the test ends.
func startRegistry(t *testing.T, nsPath string) {
	t.Helper()
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	root := t.TempDir()
	if err := imageRootfs(root); err != nil {
		t.Fatal(err)
	}
	base, err := layerOf(root)
	if err != nil {
		t.Fatal(err)
	}
	// Pushed over the host's loopback; the registry keeps images by
	// repository, whatever host name they were pushed under.
	push, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pushSrv := &http.Server{Handler: h}
	go pushSrv.Serve(push)
	defer pushSrv.Close()
	for _, ti := range testImages() {
		img, err := buildImage(base, ti)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range ti.refs {
			ref, err := name.ParseReference(push.Addr().String()+"/"+r, name.Insecure)
			if err != nil {
				t.Fatal(err)
			}
			if err := remote.Write(ref, img); err != nil {
				t.Fatalf("push %s: %v", ref, err)
			}
		}
	}
	var l net.Listener
	if err := network.InNamespace(nsPath, func() error {
		var err error
		l, err = net.Listen("tcp", "127.0.0.1:5000")
		return err
	}); err != nil {
		t.Fatalf("registry: %v", err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
}
