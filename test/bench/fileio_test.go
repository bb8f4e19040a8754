package bench

import (
	"archive/tar"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/podvm/podvm/test/harness"
)

// File IO workloads, as issue 12 names them.
const (
	bigFileMiB  = 100
	treeDirs    = 20
	treeFiles   = 100 // per directory
	treeFileLen = 1024
)

// BenchmarkFileIO measures file IO inside a container: runc, podvm over
// 9p (the default) and podvm over virtio-fs side by side, on the same host
// files bind-mounted at /data. Each workload is a `ctr task exec` into a
// running container, timed from the host, less the median of an exec of
// `true` in the same container (the exec's own cost, measured apart).
func BenchmarkFileIO(b *testing.B) {
	harness.VMConfig(b)
	ctd := harness.StartContainerd(b, "")
	ctd.ImportBusybox(b)
	data := b.TempDir()
	if err := writeFileIOData(data); err != nil {
		b.Fatal(err)
	}
	virtiofs := filepath.Join(b.TempDir(), "virtiofs.toml")
	if err := os.WriteFile(virtiofs, []byte("[hypervisor]\nshared_fs = \"virtio-fs\"\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	flavours := []struct {
		name, runtime string
		flags         []string
	}{
		{"runc", runtimes[0], nil},
		{"podvm 9p", runtimes[1], nil},
		{"podvm virtio-fs", runtimes[1], []string{"--runtime-config-path", virtiofs}},
	}
	workloads := []struct{ name, cmd string }{
		// dd, not cat: busybox's cat sendfile()s to /dev/null, which
		// reads nothing under runc.
		{fmt.Sprintf("read a %d MiB file", bigFileMiB), "dd if=/data/big of=/dev/null bs=1M 2>/dev/null"},
		{fmt.Sprintf("untar %d files of %d B", treeDirs*treeFiles, treeFileLen), "mkdir /u$$ && tar -xf /data/tree.tar -C /u$$"},
		{fmt.Sprintf("ls -lR of %d files", treeDirs*treeFiles), "ls -lR /data/tree > /dev/null"},
	}
	ctx := context.Background()
	ctr := func(args ...string) {
		if _, errOut, err := ctd.Ctr(ctx, args...); err != nil {
			b.Fatalf("ctr %v: %v: %s", args, err, errOut)
		}
	}
	n := harness.Samples(5)
	// took[flavour][workload]: the first run and the median of the rest,
	// each less the exec's own cost.
	type result struct{ first, again time.Duration }
	took := make([][]result, len(flavours))
	// What the shared filesystem costs elsewhere: the start (virtio-fs
	// VMs boot, 9p ones restore from a template) and an idle pod's host
	// memory (QEMU, shim and virtiofsd).
	starts := make([][]time.Duration, len(flavours))
	mem := make([]harness.Memory, len(flavours))
	execs := 0
	for f, fl := range flavours {
		for i := 0; i < n; i++ {
			start := time.Now()
			ctr(append(append([]string{"run", "--rm", "--runtime", fl.runtime}, fl.flags...), harness.BusyboxImage, fmt.Sprintf("fileio-%d-run-%d", f, i), "true")...)
			starts[f] = append(starts[f], time.Since(start))
		}
		id := fmt.Sprintf("fileio-%d", f)
		args := append([]string{"run", "-d", "--runtime", fl.runtime}, fl.flags...)
		args = append(args, "--mount", "type=bind,src="+data+",dst=/data,options=rbind:ro", harness.BusyboxImage, id, "sleep", "100000")
		ctr(args...)
		if f > 0 {
			mem[f] = podMemory(b, id, filepath.Join(ctd.Dir, "podvm", "sandboxes", id, "shared"))
		}
		exec := func(cmd string) time.Duration {
			execs++
			start := time.Now()
			ctr("task", "exec", "--exec-id", fmt.Sprintf("e%d", execs), id, "sh", "-c", cmd)
			return time.Since(start)
		}
		var base []time.Duration
		for i := 0; i < n; i++ {
			base = append(base, exec("true"))
		}
		overhead := harness.Median(base)
		for _, w := range workloads {
			var again []time.Duration
			first := exec(w.cmd) - overhead
			for i := 1; i < n; i++ {
				again = append(again, exec(w.cmd)-overhead)
			}
			took[f] = append(took[f], result{first, harness.Median(again)})
		}
		ctr("task", "kill", "-s", "KILL", id)
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if out, _, _ := ctd.Ctr(ctx, "task", "ls"); !strings.Contains(out, "RUNNING") {
				break
			}
		}
		ctr("task", "delete", id)
		ctr("container", "delete", id)
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }
	fmt.Printf("shared filesystems, what else they cost (%d samples):\n", n)
	for f, fl := range flavours {
		line := fmt.Sprintf("  %-16s ctr run --rm true: %s", fl.name, harness.Summary(starts[f]))
		if f > 0 {
			line += fmt.Sprintf("; one idle pod alone: %.1f MiB PSS (QEMU and shim, and virtiofsd where there is one)", mem[f].PSS)
		}
		fmt.Println(line)
	}
	fmt.Printf("file IO in a container, runc and podvm (9p, virtio-fs) side by side (first run, then the median of %d more; exec cost taken off):\n", n-1)
	for w, wl := range workloads {
		fmt.Printf("  %s:\n", wl.name)
		for f, fl := range flavours {
			r := took[f][w]
			line := fmt.Sprintf("    %-16s first %8s, again %8s", fl.name, ms(r.first), ms(r.again))
			if w == 0 && r.again > 0 {
				line += fmt.Sprintf(" (%.0f MB/s)", float64(bigFileMiB)*1.048576/r.again.Seconds())
			}
			if f > 0 && took[0][w].again > 0 {
				line += fmt.Sprintf("  %.1fx runc", float64(r.again)/float64(took[0][w].again))
			}
			fmt.Println(line)
		}
	}
}

// podMemory is the host memory of sandbox id's processes: QEMU, the shim
// and the virtio-fs daemon serving share, if any.
func podMemory(b *testing.B, id, share string) harness.Memory {
	c := harness.TakeCensus()
	var sum harness.Memory
	for _, pid := range []int{c.QEMUPid(id), c.ShimPid(id), c.VirtiofsdPid(share)} {
		if pid == 0 {
			continue
		}
		m, err := harness.ReadMemory(pid)
		if err != nil {
			b.Fatal(err)
		}
		sum = sum.Add(m)
	}
	return sum
}

// writeFileIOData writes the workloads' files into dir: a file of random
// bytes, a tree of small files and the same tree as a tar.
func writeFileIOData(dir string) error {
	big, err := os.Create(filepath.Join(dir, "big"))
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for i := 0; i < bigFileMiB; i++ {
		rand.Read(buf)
		if _, err := big.Write(buf); err != nil {
			big.Close()
			return err
		}
	}
	if err := big.Close(); err != nil {
		return err
	}
	archive, err := os.Create(filepath.Join(dir, "tree.tar"))
	if err != nil {
		return err
	}
	defer archive.Close()
	tw := tar.NewWriter(archive)
	content := make([]byte, treeFileLen)
	rand.Read(content)
	for d := 0; d < treeDirs; d++ {
		sub := fmt.Sprintf("tree/d%02d", d)
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: sub + "/", Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
			return err
		}
		for f := 0; f < treeFiles; f++ {
			name := fmt.Sprintf("%s/f%03d", sub, f)
			if err := os.WriteFile(filepath.Join(dir, name), content, 0o644); err != nil {
				return err
			}
			if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: treeFileLen}); err != nil {
				return err
			}
			if _, err := tw.Write(content); err != nil {
				return err
			}
		}
	}
	return tw.Close()
}
