package server

import (
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics is the Prometheus exporter on metrics.listen: requests by
// protocol and operation with their latency, file bytes read and written,
// transactions committed, and the store's logical and stored bytes.
type metrics struct {
	requests *prometheus.CounterVec
	errors   *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	bytes    *prometheus.CounterVec
}

func newMetrics(s *Server) (*metrics, *prometheus.Registry) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "asof_requests_total", Help: "Requests served, by protocol and operation.",
		}, []string{"protocol", "op"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "asof_request_errors_total", Help: "Requests answered with an error, by protocol and operation.",
		}, []string{"protocol", "op"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "asof_request_duration_seconds", Help: "Time to serve a request, by protocol and operation.",
			Buckets: prometheus.ExponentialBuckets(20e-6, 4, 10), // 20µs to about 5s
		}, []string{"protocol", "op"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "asof_data_bytes_total", Help: "File data read and written, by protocol and direction.",
		}, []string{"protocol", "direction"}),
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.requests, m.errors, m.latency, m.bytes,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "asof_transactions_committed_total", Help: "Transactions committed since the server started.",
		}, func() float64 { return float64(s.store.Commits()) }),
	)
	// The store's figures cost a scan of the index: taken at most every
	// ten seconds.
	stat := func(pick func(logical, stored int64) int64) func() float64 {
		return func() float64 {
			st, err := s.store.Stats(10 * time.Second)
			if err != nil {
				return 0
			}
			return float64(pick(st.LogicalBytes, st.StoredBytes))
		}
	}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "asof_logical_bytes", Help: "Sum of the sizes of live files."},
			stat(func(l, _ int64) int64 { return l })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "asof_stored_bytes", Help: "Bytes the store takes on disk."},
			stat(func(_, st int64) int64 { return st })),
	)
	return m, reg
}

// Request implements fs.Observer.
func (m *metrics) Request(protocol, op string, start time.Time, err error) {
	m.requests.WithLabelValues(protocol, op).Inc()
	m.latency.WithLabelValues(protocol, op).Observe(time.Since(start).Seconds())
	if err != nil {
		m.errors.WithLabelValues(protocol, op).Inc()
	}
}

// Bytes implements fs.Observer.
func (m *metrics) Bytes(protocol string, read, written int) {
	if read > 0 {
		m.bytes.WithLabelValues(protocol, "read").Add(float64(read))
	}
	if written > 0 {
		m.bytes.WithLabelValues(protocol, "write").Add(float64(written))
	}
}

func (s *Server) startMetrics(reg *prometheus.Registry) error {
	l, err := s.listen("tcp", s.cfg.Metrics.Listen, "metrics")
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	s.https = append(s.https, srv)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := srv.Serve(l); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("metrics server stopped", "err", err)
		}
	}()
	return nil
}
