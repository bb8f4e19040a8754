package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/podvm/podvm/metrics"
	"github.com/podvm/podvm/vmconfig"
)

// runMetrics is `metrics`: every running shim's metrics as one Prometheus
// text exposition on stdout, for a node exporter's textfile collector or a
// scrape through a small HTTP wrapper.
func runMetrics(args []string) int {
	fs := flag.NewFlagSet("metrics", flag.ContinueOnError)
	stateDir := fs.String("state-dir", "", "podvm's state directory (default: state_dir of the configuration)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *stateDir == "" {
		cfg, err := vmconfig.Load()
		if err != nil {
			fmt.Fprintf(os.Stderr, "metrics: %v (fix the configuration, or pass --state-dir)\n", err)
			return 1
		}
		*stateDir = cfg.StateDir
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, errs := metrics.Gather(ctx, os.Stdout, *stateDir)
	for _, err := range errs {
		// A shim that is stopping does not answer; the others still count.
		fmt.Fprintf(os.Stderr, "metrics: %v\n", err)
	}
	fmt.Printf("# HELP podvm_shims Shims found in %s, by whether they answered.\n# TYPE podvm_shims gauge\n", *stateDir)
	fmt.Printf("podvm_shims{state=\"answered\"} %d\npodvm_shims{state=\"failed\"} %d\n", n, len(errs))
	return 0
}
