package harness

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"
)

// Samples is how many times each timed step of a benchmark runs:
// $PODVM_BENCH_N, else def.
func Samples(def int) int {
	if n, err := strconv.Atoi(os.Getenv("PODVM_BENCH_N")); err == nil && n > 0 {
		return n
	}
	return def
}

// Summary renders a sample as median and spread.
func Summary(d []time.Duration) string {
	if len(d) == 0 {
		return "no samples"
	}
	s := slices.Clone(d)
	slices.Sort(s)
	q := func(p float64) time.Duration { return s[int(p*float64(len(s)-1)+0.5)] }
	ms := func(x time.Duration) string { return fmt.Sprintf("%.0f", float64(x)/float64(time.Millisecond)) }
	return fmt.Sprintf("median %s ms (min %s, p10 %s, p90 %s, max %s; n=%d)",
		ms(q(0.5)), ms(s[0]), ms(q(0.1)), ms(q(0.9)), ms(s[len(s)-1]), len(s))
}

// Median returns the middle value of a sample.
func Median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
