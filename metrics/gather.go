package metrics

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sort"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/podvm/podvm/unixsock"
)

// Gather scrapes every shim whose sandbox lives under stateDir and writes
// their metrics as one Prometheus text exposition: what a node exporter's
// textfile collector or a scrape job reads. Shims that do not answer (one
// that is stopping) are reported in the returned errors and left out.
func Gather(ctx context.Context, w io.Writer, stateDir string) (shims int, errs []error) {
	socks, _ := filepath.Glob(filepath.Join(stateDir, "sandboxes", "*", SocketName))
	families := map[string]*dto.MetricFamily{}
	for _, sock := range socks {
		fams, err := scrape(ctx, sock)
		if err != nil {
			errs = append(errs, fmt.Errorf("sandbox %s: %w", filepath.Base(filepath.Dir(sock)), err))
			continue
		}
		shims++
		for name, f := range fams {
			if have, ok := families[name]; ok {
				have.Metric = append(have.Metric, f.Metric...)
			} else {
				families[name] = f
			}
		}
	}
	names := make([]string, 0, len(families))
	for name := range families {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if _, err := expfmt.MetricFamilyToText(w, families[name]); err != nil {
			return shims, append(errs, err)
		}
	}
	return shims, errs
}

// scrape reads one shim's metrics.
func scrape(ctx context.Context, sock string) (map[string]*dto.MetricFamily, error) {
	client := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return unixsock.Dial(ctx, sock)
		}},
	}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://shim/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics: %s", resp.Status)
	}
	return Parse(resp.Body)
}

// Parse reads Prometheus text.
func Parse(r io.Reader) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(r)
}

// Value finds, in parsed metrics, the first sample of the family name
// whose labels include the given name-value pairs: a gauge's or counter's
// value, a histogram's sample count.
func Value(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
metric:
	for _, m := range fams[name].GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue metric
			}
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}
