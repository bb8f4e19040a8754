# podvm: containerd-shim-podvm-v2 and its guest.
#
#   make deps demo    set up a fresh Debian 12 machine and show podvm working
#   make deps test    set up a fresh Debian 12 machine and run the tests

PREFIX    ?= /usr/local
DESTDIR   ?=
GO        ?= go
BUILD     := $(CURDIR)/build
TOOLS     := $(BUILD)/tools
GUEST     := $(BUILD)/guest
VERSION   := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
MODULE    := github.com/podvm/podvm
LDFLAGS   := -s -w -X $(MODULE)/version.Version=$(VERSION)

# Tool versions are pinned; `make deps` installs exactly these.
PROTOC_GEN_GO_VERSION := v1.36.12
TTRPC_VERSION         := v1.2.10
CRICTL_VERSION        := v1.37.0
# containerd 2.x, beside Debian's 1.6: the end-to-end tests run on both.
CONTAINERD2_VERSION   := v2.4.2
CONTAINERD2           := $(TOOLS)/containerd-2
# The Kubernetes node test's programs, pinned by test/k8s/tools/go.mod.
K8S_TOOLS   := $(TOOLS)/k8s
K8S_VERSION := $(shell grep -o -m1 'k8s.io/kubernetes v[0-9.]*' test/k8s/tools/go.mod | cut -d' ' -f2)
K8S_LDFLAGS := -s -w -X k8s.io/component-base/version.gitVersion=$(K8S_VERSION) \
	-X k8s.io/component-base/version.gitMajor=$(word 1,$(subst ., ,$(K8S_VERSION:v%=%))) \
	-X k8s.io/component-base/version.gitMinor=$(word 2,$(subst ., ,$(K8S_VERSION:v%=%))) \
	-X k8s.io/component-base/version.gitTreeState=clean

APT_PACKAGES := qemu-system-x86 qemu-utils containerd runc containernetworking-plugins \
	busybox-static protobuf-compiler libprotobuf-dev libseccomp-dev linux-source-6.1 flex bison \
	libelf-dev libssl-dev bc cpio xz-utils iproute2 gcc libc6-dev make git pkg-config

export PATH := $(TOOLS):$(PATH)

.PHONY: all deps k8s-tools build guest generate verify-generate install uninstall deploy-image test conformance k8s-e2e k8s-bench unit bench density soak demo check clean \
	bin/containerd-shim-podvm-v2 bin/podvm-agent bin/podvm-demo $(GUEST)/initramfs.cpio

all: build guest

## deps: Debian packages, pinned Go tools and modules (idempotent)
deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f '$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(TOOLS) $(GO) install github.com/containerd/ttrpc/cmd/protoc-gen-go-ttrpc@$(TTRPC_VERSION)
	@# crictl is not packaged by Debian; the CRI tests drive containerd with it.
	@[ -x $(TOOLS)/crictl ] && $(GO) version -m $(TOOLS)/crictl | grep -q "mod.*cri-tools.*$(CRICTL_VERSION)" || \
		GOBIN=$(TOOLS) $(GO) install sigs.k8s.io/cri-tools/cmd/crictl@$(CRICTL_VERSION)
	@# critest (cri-tools' conformance suite) is a test binary: built with
	@# go test -c from a throwaway module that requires cri-tools.
	@[ -x $(TOOLS)/critest ] && $(GO) version -m $(TOOLS)/critest | grep -q "mod.*cri-tools.*$(CRICTL_VERSION)" || { \
		d=$$(mktemp -d) && cd $$d && printf 'module critestbuild\n\ngo 1.26\n' > go.mod && \
		printf '//go:build tools\n\npackage tools\n\nimport _ "sigs.k8s.io/cri-tools/pkg/validate"\n' > tools.go && \
		GOFLAGS=-mod=mod $(GO) get sigs.k8s.io/cri-tools@$(CRICTL_VERSION) && \
		GOFLAGS=-mod=mod $(GO) test -c -o $(TOOLS)/critest sigs.k8s.io/cri-tools/cmd/critest; \
		rc=$$?; rm -rf $$d; exit $$rc; }
	@[ -x $(CONTAINERD2)/containerd ] && $(CONTAINERD2)/containerd --version | grep -q " $(CONTAINERD2_VERSION:v%=%)+" || \
		GOBIN=$(CONTAINERD2) $(GO) install -tags 'no_btrfs no_devmapper no_zfs' \
			github.com/containerd/containerd/v2/cmd/containerd@$(CONTAINERD2_VERSION) \
			github.com/containerd/containerd/v2/cmd/ctr@$(CONTAINERD2_VERSION) \
			github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$(CONTAINERD2_VERSION)
	$(GO) mod download
	@$(MAKE) --no-print-directory k8s-tools

## k8s-tools: etcd, kube-apiserver, kubelet and kubectl for the Kubernetes
## node test, built from the Go module proxy (~4 minutes the first time)
k8s-tools:
	@[ -x $(K8S_TOOLS)/kubelet ] && $(GO) version -m $(K8S_TOOLS)/kubelet | grep -q "k8s.io/kubernetes[[:space:]]*$(K8S_VERSION)[[:space:]]" && \
		[ -x $(K8S_TOOLS)/etcd ] && [ -x $(K8S_TOOLS)/kube-apiserver ] && [ -x $(K8S_TOOLS)/kubectl ] || { \
		echo "building Kubernetes $(K8S_VERSION) and etcd into $(K8S_TOOLS)" && mkdir -p $(K8S_TOOLS) && cd test/k8s/tools && \
		CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(K8S_LDFLAGS)' -o $(K8S_TOOLS)/ \
			k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl && \
		CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $(K8S_TOOLS)/etcd go.etcd.io/etcd/server/v3; }

## build: the shim (static, no cgo) and the guest agent (static, cgo)
build: bin/containerd-shim-podvm-v2 bin/podvm-agent

bin/containerd-shim-podvm-v2:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/containerd-shim-podvm-v2

# The agent links libcontainer (cgo, for nsenter) and libseccomp statically:
# the guest has no shared libraries.
bin/podvm-agent:
	CGO_ENABLED=1 $(GO) build -trimpath -tags 'osusergo netgo seccomp runc_nocriu' \
		-ldflags '$(LDFLAGS) -linkmode external -extldflags -static' -o $@ ./cmd/podvm-agent

bin/podvm-demo:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/podvm-demo

## guest: the guest kernel (cached by its config) and the initramfs
guest: $(GUEST)/vmlinux $(GUEST)/initramfs.cpio

$(GUEST)/vmlinux: guest/kernel/podvm.config guest/kernel/build.sh $(wildcard guest/kernel/patches/*.patch)
	guest/kernel/build.sh $(GUEST)
	@touch $@

$(GUEST)/initramfs.cpio: bin/podvm-agent
	$(GO) run ./guest/mkinitramfs -agent bin/podvm-agent -o $@

## generate: the protobuf and ttrpc code of api/ (committed)
generate:
	protoc -I api -I /usr/include --go_out=. --go_opt=module=$(MODULE) \
		--go-ttrpc_out=. --go-ttrpc_opt=module=$(MODULE) api/agent/v1/agent.proto api/agent/v1/containers.proto api/agent/v1/network.proto api/agent/v1/debug.proto api/agent/v1/forward.proto

# The committed generated code must be what `make generate` produces.
verify-generate: generate
	@git diff --exit-code --stat -- api/ || { echo "api/ differs from make generate: commit the regenerated files"; exit 1; }

## install: the shim in $(PREFIX)/bin, the guest in $(PREFIX)/share/podvm,
## a static busybox for the debug console beside them, an example
## configuration in /etc/podvm (kept if one exists)
install: build guest
	install -D -m 0755 bin/containerd-shim-podvm-v2 $(DESTDIR)$(PREFIX)/bin/containerd-shim-podvm-v2
	install -D -m 0644 $(GUEST)/vmlinux $(DESTDIR)$(PREFIX)/share/podvm/vmlinux
	install -D -m 0644 $(GUEST)/vmlinux.version $(DESTDIR)$(PREFIX)/share/podvm/vmlinux.version
	install -D -m 0644 $(GUEST)/initramfs.cpio $(DESTDIR)$(PREFIX)/share/podvm/initramfs.cpio
	install -D -m 0755 /bin/busybox $(DESTDIR)$(PREFIX)/share/podvm/busybox
	install -D -m 0644 config/config.toml $(DESTDIR)$(PREFIX)/share/podvm/config.toml.example
	@if [ ! -e $(DESTDIR)/etc/podvm/config.toml ]; then \
		install -D -m 0644 config/config.toml $(DESTDIR)/etc/podvm/config.toml; \
	else echo "kept existing $(DESTDIR)/etc/podvm/config.toml"; fi

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/containerd-shim-podvm-v2
	rm -rf $(DESTDIR)$(PREFIX)/share/podvm

## deploy-image: deploy/'s installer image, build/podvm-deploy.tar (ctr -n k8s.io image import)
deploy-image: build guest
	rm -rf build/deploy-root
	$(MAKE) install DESTDIR=$(CURDIR)/build/deploy-root PREFIX=/opt/podvm
	$(GO) run ./deploy/image -source build/deploy-root/opt/podvm -o build/podvm-deploy.tar
	rm -rf build/deploy-root

## test: every test, as root, with real QEMU guests; nothing may be skipped;
## the end-to-end suites and CRI conformance run against Debian's
## containerd 1.6 and against 2.x
test: build guest verify-generate
	gofmt_out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		if [ -n "$$gofmt_out" ]; then echo "gofmt needed:" $$gofmt_out; exit 1; fi
	$(GO) vet ./...
	PODVM_TEST_REQUIRE=1 PODVM_KERNEL=$(GUEST)/vmlinux PODVM_INITRAMFS=$(GUEST)/initramfs.cpio \
		$(GO) test -count=1 -p 1 -timeout 45m ./...
	@echo "== the end-to-end suites again, against containerd $(CONTAINERD2_VERSION)"
	PODVM_CONTAINERD=2 PODVM_TEST_REQUIRE=1 PODVM_KERNEL=$(GUEST)/vmlinux PODVM_INITRAMFS=$(GUEST)/initramfs.cpio \
		$(GO) test -count=1 -p 1 -timeout 45m ./test/e2e
	@$(MAKE) --no-print-directory conformance
	@$(MAKE) --no-print-directory k8s-e2e

## conformance: cri-tools' critest against containerd 1.6 and 2.x, handlers
## runc and podvm side by side (images built here, served from a registry in
## the test's namespace); prints the specs runc passes that podvm does not
CRITEST_RUN = PODVM_TEST_REQUIRE=1 PODVM_KERNEL=$(GUEST)/vmlinux PODVM_INITRAMFS=$(GUEST)/initramfs.cpio \
	$(GO) test -tags conformance -count=1 -p 1 -v -run TestCritest -timeout 60m ./test/conformance
conformance: build guest
	@echo "== critest against containerd 1.6"
	$(CRITEST_RUN)
	@echo "== critest against containerd $(CONTAINERD2_VERSION)"
	PODVM_CONTAINERD=2 $(CRITEST_RUN)

## k8s-e2e: a Kubernetes node (etcd, kube-apiserver, kubelet) on the test's
## containerd 1.6 and 2.x runs pods of RuntimeClass podvm
K8S_RUN = PODVM_TEST_REQUIRE=1 PODVM_KERNEL=$(GUEST)/vmlinux PODVM_INITRAMFS=$(GUEST)/initramfs.cpio \
	$(GO) test -tags k8s -count=1 -p 1 -timeout 30m
k8s-e2e: build guest k8s-tools
	@echo "== kubelet $(K8S_VERSION) against containerd 1.6"
	$(K8S_RUN) -run TestNode ./test/k8s
	@echo "== kubelet $(K8S_VERSION) against containerd $(CONTAINERD2_VERSION)"
	PODVM_CONTAINERD=2 $(K8S_RUN) -run TestNode ./test/k8s

## k8s-bench: pod start and delete through kubelet, runc beside podvm
k8s-bench: build guest k8s-tools
	PODVM_CONTAINERD_LOG=info $(K8S_RUN) -run '^$$' -bench . -benchtime 1x ./test/k8s

## unit: the tests that need neither root nor QEMU
unit:
	$(GO) test -count=1 -short -tags seccomp ./...

## bench: boot time, memory, and ctr run/exec/stdout beside runc (medians and
## spreads; PODVM_BENCH_N sets the samples); containerd and the shims log at
## info, as on a node (the guest's debug console costs time under TCG)
bench: build guest
	PODVM_CONTAINERD_LOG=info PODVM_TEST_REQUIRE=1 PODVM_KERNEL=$(GUEST)/vmlinux PODVM_INITRAMFS=$(GUEST)/initramfs.cpio \
		$(GO) test -count=1 -run '^$$' -bench . -benchtime 1x -timeout 60m ./test/bench

## density: DENSITY_N idle pods started through CRI one after the other;
## prints the time, each pod's host memory (QEMU + shim PSS, 5 s after the
## last start and settled, PODVM_DENSITY_SETTLE s after it) and the host
## CPU while they idle, then removes them (nothing may be left)
DENSITY_N ?= 100
density: build guest
	PODVM_DENSITY_N=$(DENSITY_N) PODVM_CONTAINERD_LOG=info PODVM_TEST_REQUIRE=1 PODVM_KERNEL=$(GUEST)/vmlinux PODVM_INITRAMFS=$(GUEST)/initramfs.cpio \
		$(GO) test -count=1 -run '^$$' -bench BenchmarkDensity -benchtime 1x -timeout 60m ./test/bench

## soak: CRI pods created, exec'd into and removed in a loop with QEMU or
## the shim killed at random (N cycles); prints failures and leftovers
N ?= 200
soak: build guest
	PODVM_SOAK_N=$(N) PODVM_TEST_REQUIRE=1 PODVM_KERNEL=$(GUEST)/vmlinux PODVM_INITRAMFS=$(GUEST)/initramfs.cpio \
		$(GO) test -tags soak -count=1 -v -run TestSoak -timeout 0 ./test/soak

## demo: the furthest podvm gets on this machine
demo: build guest bin/podvm-demo
	bin/podvm-demo -kernel $(GUEST)/vmlinux -initramfs $(GUEST)/initramfs.cpio

## check: what this host has and lacks for podvm
check: build guest
	bin/containerd-shim-podvm-v2 check

clean:
	rm -rf bin build/guest build/tools
