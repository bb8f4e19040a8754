package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/containerd/log"

	"github.com/podvm/podvm/sandbox"
	"github.com/podvm/podvm/vm"
)

// runTemplate is `template build|list|remove`: the VM templates pods are
// restored from, managed ahead of time (the first pod builds one too).
func runTemplate(args []string) int {
	fs := flag.NewFlagSet("template", flag.ContinueOnError)
	configPath := fs.String("config", "", "podvm's configuration file (default: $PODVM_CONFIG, else the usual one)")
	nics := fs.Int("nics", 1, "network interfaces of the pods the template is for (CRI pods have one)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage: containerd-shim-podvm-v2 template [-config FILE] [-nics N] build|list|remove\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	cfg, path, err := loadConfig(*configPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "configuration %s: %v\n", path, err)
		return 1
	}
	switch fs.Arg(0) {
	case "build":
		if *nics < 0 || *nics > 8 {
			fmt.Fprintf(os.Stderr, "-nics %d: give 0 to 8 interfaces\n", *nics)
			return 2
		}
		if !cfg.Template.Enabled {
			fmt.Fprintf(os.Stderr, "templates are disabled in %s: set enabled = true under [template]\n", path)
			return 1
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		_ = log.SetLevel("warn")
		start := time.Now()
		t, err := sandbox.PrepareTemplate(ctx, cfg, *nics)
		if err != nil {
			fmt.Fprintf(os.Stderr, "build a template: %v\n", err)
			return 1
		}
		if t == nil {
			fmt.Fprintln(os.Stderr, "templates do not apply to this configuration (the vsock agent transport boots every VM)")
			return 1
		}
		fmt.Printf("%s (%v)\n", t.Dir, time.Since(start).Round(time.Millisecond))
	case "list":
		ts, err := vm.Templates(cfg)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		for _, t := range ts {
			fmt.Println(t.Dir)
		}
	case "remove":
		if err := vm.RemoveTemplates(cfg); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	default:
		fs.Usage()
		return 2
	}
	return 0
}
