package harness

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

// logField is one key=value of a logrus text line; values may be quoted.
var logField = regexp.MustCompile(`([a-z_]+)=("(?:[^"\\]|\\.)*"|\S+)`)

// Phases collects, from a containerd log with its shims' lines, the
// durations each log line with message msg carries (the shim's start
// phases: "pod VM up, ...", "container created"), by field name.
func Phases(log, msg string) map[string][]time.Duration {
	out := map[string][]time.Duration{}
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, `msg="`+msg) {
			continue
		}
		for _, m := range logField.FindAllStringSubmatch(line, -1) {
			d, err := time.ParseDuration(strings.Trim(m[2], `"`))
			if err == nil && m[1] != "time" {
				out[m[1]] = append(out[m[1]], d)
			}
		}
	}
	return out
}

// PhaseTable prints the median of each phase in order, then the others.
func PhaseTable(p map[string][]time.Duration, order ...string) string {
	var keys []string
	for _, k := range order {
		if _, ok := p[k]; ok {
			keys = append(keys, k)
		}
	}
	var rest []string
	for k := range p {
		if !slices.Contains(keys, k) {
			rest = append(rest, k)
		}
	}
	slices.Sort(rest)
	var b strings.Builder
	for _, k := range append(keys, rest...) {
		fmt.Fprintf(&b, "      %-14s %6.1f ms (n=%d)\n", k, float64(Median(p[k]))/float64(time.Millisecond), len(p[k]))
	}
	return b.String()
}
