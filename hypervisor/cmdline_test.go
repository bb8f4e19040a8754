package hypervisor

import (
	"slices"
	"strings"
	"testing"
)

// argValue returns the value after the first occurrence of flag, and all
// values of repeated flags.
func argValues(args []string, flag string) []string {
	var vs []string
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag {
			vs = append(vs, args[i+1])
		}
	}
	return vs
}

func TestArgs(t *testing.T) {
	tests := []struct {
		name        string
		cfg         Config
		fds         fds
		machine     string
		want        []string // flag values that must be present, as "flag=value"
		wantDevices []string
		wantParams  []string
		notParams   []string
	}{
		{
			name:        "microvm tcg serial",
			cfg:         Config{ID: "a", Machine: "microvm", Accel: TCG, CPUs: 2, MemoryMiB: 256, TBSizeMiB: 32, TSCKHz: 2445430, Ports: []string{"podvm.agent"}, Kernel: "/k", Initramfs: "/i"},
			fds:         fds{qmp: 3, console: 4, ports: []int{5}},
			machine:     "microvm,acpi=off,x-option-roms=off",
			want:        []string{"-accel=tcg,tb-size=32", "-cpu=max,-erms,-fsrm", "-smp=2", "-m=256M", "-kernel=/k", "-initrd=/i", "-name=a", "-chardev=socket,id=qmp,fd=3", "-chardev=socket,id=port0,fd=5", "-serial=chardev:console"},
			wantDevices: []string{"virtio-serial-device,max_ports=2", "virtserialport,chardev=port0,name=podvm.agent"},
			wantParams:  []string{"console=ttyS0", "acpi=off", "quiet", "tsc_early_khz=2445430", "lapic_timer_khz=1000000", "reboot=t", "panic=-1"},
		},
		{
			name:        "q35 kvm vsock debug",
			cfg:         Config{ID: "b", Machine: "q35", Accel: KVM, CPUs: 1, MemoryMiB: 512, MaxCPUs: 2, MaxMemoryMiB: 4096, TBSizeMiB: 32, TSCKHz: 2445430, Vsock: true, Ports: []string{"podvm.secret"}, Debug: true, KernelParams: []string{"foo=bar"}},
			fds:         fds{qmp: 3, console: 4, vhostVsock: 5, vsockCID: 77, ports: []int{6}},
			machine:     "q35,vmport=off,smbus=off,sata=off",
			want:        []string{"-accel=kvm", "-cpu=host", "-smp=1,maxcpus=2", "-m=512M,slots=16,maxmem=4096M"},
			wantDevices: []string{"vhost-vsock-pci,id=vsock,guest-cid=77,vhostfd=5", "virtio-serial-pci,max_ports=2", "virtserialport,chardev=port0,name=podvm.secret"},
			wantParams:  []string{"foo=bar"},
			notParams:   []string{"quiet", "acpi=off", "tsc_early_khz=2445430", "lapic_timer_khz=1000000"},
		},
		{
			name:       "q35 tcg: vCPUs present, brought up later",
			cfg:        Config{ID: "d", Machine: "q35", Accel: TCG, CPUs: 1, MemoryMiB: 512, MaxCPUs: 4, MaxMemoryMiB: 1024},
			fds:        fds{qmp: 3, console: 4},
			machine:    "q35,vmport=off,smbus=off,sata=off",
			want:       []string{"-accel=tcg", "-smp=4,maxcpus=4", "-m=512M,slots=16,maxmem=1024M"},
			wantParams: []string{"maxcpus=1"},
		},
		{
			// virtiofsd shares the guest's RAM, and refuses legacy
			// virtio-mmio devices.
			name:        "microvm virtio-fs",
			cfg:         Config{ID: "e", Machine: "microvm", Accel: TCG, CPUs: 1, MemoryMiB: 256, SharedFS: FSVirtio, Shares: []Share{{Tag: "podvm", Path: "/s"}}},
			fds:         fds{qmp: 3, console: 4, virtiofs: []int{5}},
			machine:     "microvm,acpi=off,x-option-roms=off,memory-backend=ram",
			want:        []string{"-object=memory-backend-memfd,id=ram,size=256M,share=on", "-global=virtio-mmio.force-legacy=false", "-chardev=socket,id=vfs0,fd=5"},
			wantDevices: []string{"vhost-user-fs-device,chardev=vfs0,tag=podvm,queue-size=1024"},
		},
		{
			name:        "q35 virtio-fs",
			cfg:         Config{ID: "f", Machine: "q35", Accel: TCG, CPUs: 1, MemoryMiB: 256, SharedFS: FSVirtio, Shares: []Share{{Tag: "podvm", Path: "/s"}}},
			fds:         fds{qmp: 3, console: 4, virtiofs: []int{5}},
			machine:     "q35,vmport=off,smbus=off,sata=off,memory-backend=ram",
			want:        []string{"-object=memory-backend-memfd,id=ram,size=256M,share=on", "-chardev=socket,id=vfs0,fd=5"},
			wantDevices: []string{"vhost-user-fs-pci,chardev=vfs0,tag=podvm,queue-size=1024"},
		},
		{
			name:        "microvm 9p",
			cfg:         Config{ID: "g", Machine: "microvm", Accel: TCG, CPUs: 1, MemoryMiB: 256, Shares: []Share{{Tag: "podvm", Path: "/s,x"}}},
			fds:         fds{qmp: 3, console: 4},
			machine:     "microvm,acpi=off,x-option-roms=off",
			want:        []string{"-fsdev=local,id=fs0,path=/s,,x,security_model=passthrough,multidevs=remap"},
			wantDevices: []string{"virtio-9p-device,fsdev=fs0,mount_tag=podvm"},
		},
		{
			name:    "default TCG cache, no serial ports",
			cfg:     Config{ID: "c", Machine: "microvm", Accel: TCG, CPUs: 1, MemoryMiB: 128, MaxCPUs: 2, MaxMemoryMiB: 4096},
			fds:     fds{qmp: 3, console: 4},
			machine: "microvm,acpi=off,x-option-roms=off",
			// microvm cannot grow: no room is reserved.
			want:      []string{"-accel=tcg", "-smp=1", "-m=128M"},
			notParams: []string{"tsc_early_khz=0"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := args(&tt.cfg, tt.fds)
			if err != nil {
				t.Fatal(err)
			}
			if got := argValues(a, "-machine"); len(got) != 1 || got[0] != tt.machine {
				t.Errorf("-machine = %v, want %q", got, tt.machine)
			}
			for _, w := range tt.want {
				flag, value, _ := strings.Cut(w, "=")
				if !slices.Contains(argValues(a, flag), value) {
					t.Errorf("missing %s %s in %v", flag, value, a)
				}
			}
			devices := argValues(a, "-device")
			for _, d := range tt.wantDevices {
				if !slices.Contains(devices, d) {
					t.Errorf("missing -device %s in %v", d, devices)
				}
			}
			// Exactly one virtio-serial device, and none without ports.
			serial := 0
			for _, d := range devices {
				if strings.HasPrefix(d, "virtio-serial") {
					serial++
				}
			}
			if want := min(len(tt.cfg.Ports), 1); serial != want {
				t.Errorf("%d virtio-serial devices for %d ports, want %d", serial, len(tt.cfg.Ports), want)
			}
			for _, must := range []string{"-no-reboot", "-nodefaults", "-no-user-config"} {
				if !slices.Contains(a, must) {
					t.Errorf("missing %s", must)
				}
			}
			appends := argValues(a, "-append")
			if len(appends) != 1 {
				t.Fatalf("-append given %d times", len(appends))
			}
			params := strings.Fields(appends[0])
			for _, p := range tt.wantParams {
				if !slices.Contains(params, p) {
					t.Errorf("kernel command line lacks %s: %s", p, appends[0])
				}
			}
			for _, p := range tt.notParams {
				if slices.Contains(params, p) {
					t.Errorf("kernel command line has %s: %s", p, appends[0])
				}
			}
			// A bare "init" would reach the agent as an argument.
			if slices.Contains(params, "init") {
				t.Errorf("kernel command line has a bare init: %s", appends[0])
			}
			// Extra parameters come last so that they override.
			if len(tt.cfg.KernelParams) > 0 && params[len(params)-1] != tt.cfg.KernelParams[len(tt.cfg.KernelParams)-1] {
				t.Errorf("extra kernel parameters are not last: %s", appends[0])
			}
		})
	}
}

func TestArgsUnknownMachine(t *testing.T) {
	_, err := args(&Config{Machine: "pc"}, fds{})
	if err == nil || !strings.Contains(err.Error(), `"pc"`) || !strings.Contains(err.Error(), "microvm") {
		t.Fatalf("err = %v, want one naming pc and the supported machines", err)
	}
}
