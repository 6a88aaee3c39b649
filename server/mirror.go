package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/asof/asof/config"
	"github.com/asof/asof/history"
	"github.com/asof/asof/mirror"
)

// Mirrors (docs/SPEC.md section 6): with mirror.listen the server is a
// source that targets pull from; with mirror.source it follows a source,
// serving its copy read-only. The control API's mirror routes are listed
// in api.go.

// mirrorState is the server's mirror side.
type mirrorState struct {
	source *mirror.Source
	token  []byte // the target's copy of its source's token

	mu     sync.Mutex // guards target and cancel
	target *mirror.Target
	cancel context.CancelFunc
	done   chan struct{}
}

// prepareMirror makes the data directory an empty mirror when the server
// is to follow a source and holds no store yet: Open would otherwise make
// a store of its own.
func prepareMirror(cfg *config.Config) error {
	if cfg.Mirror.Source == "" || history.IsStore(cfg.Data) {
		return nil
	}
	if err := history.CreateMirror(cfg.Data); err != nil {
		return fmt.Errorf("mirror.source: %w", err)
	}
	return nil
}

// startMirror serves targets and follows a source, as configured.
func (s *Server) startMirror() error {
	m := &mirrorState{}
	s.mirror = m
	if s.store.Mirror() {
		s.log.Info("serving a read-only mirror: changes are refused until asof mirror promote", "lineage", s.store.Lineage())
	}
	if src := s.cfg.Mirror.Source; src != "" {
		if !s.store.Mirror() {
			return fmt.Errorf("mirror.source is %s, but %s is a writable store of its own (promoted, or never a mirror): "+
				"a mirror starts from an empty data directory", src, s.cfg.Data)
		}
		token, err := readToken(s.cfg.Mirror.TokenFile)
		if err != nil {
			return fmt.Errorf("mirror.source: %w (copy the source's token file there)", err)
		}
		m.token = token
		m.startTarget(s)
	}
	if s.cfg.Mirror.Listen != "" {
		if s.store.Mirror() {
			// A mirror's cleaner takes ids in the gap after its source's
			// transactions, where a target of its own would take them too.
			return fmt.Errorf("mirror.listen: %s is a mirror, and a mirror cannot serve targets of its own yet: "+
				"let them follow its source, or promote it", s.cfg.Data)
		}
		token, err := sourceToken(s.cfg.Mirror.TokenFile)
		if err != nil {
			return fmt.Errorf("mirror.listen: %w", err)
		}
		l, err := s.listenProtocol(s.cfg.Mirror.Listen, "mirror")
		if err != nil {
			return err
		}
		m.source = mirror.NewSource(s.store, mirror.SourceOptions{Token: token, Logger: s.log})
		s.conns.serveAllowing("mirror", l, m.source, gate{s.cfg.Mirror.Allows, "mirror.allow"})
		s.log.Info("serving targets (mirror source)", "addr", s.Addrs["mirror"], "token_file", s.cfg.Mirror.TokenFile)
	}
	return nil
}

func (m *mirrorState) startTarget(s *Server) {
	ctx, cancel := context.WithCancel(context.Background())
	t := mirror.NewTarget(s.store, s.cfg.Mirror.Source, mirror.TargetOptions{Token: m.token, Logger: s.log, BytesPerSec: s.cfg.Mirror.BWLimit})
	done := make(chan struct{})
	m.mu.Lock()
	m.target, m.cancel, m.done = t, cancel, done
	m.mu.Unlock()
	go func() {
		defer close(done)
		t.Run(ctx)
	}()
	s.log.Info("following a mirror source", "source", s.cfg.Mirror.Source, "position", s.store.LastTID())
}

// stopTarget stops following, and waits for the batch being applied.
func (m *mirrorState) stopTarget() {
	m.mu.Lock()
	cancel, done := m.cancel, m.done
	m.cancel = nil
	m.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// stopMirror ends the pull before the store closes (the targets'
// connections are the connection lifecycle's, drained before).
func (s *Server) stopMirror() {
	if m := s.mirror; m != nil {
		m.stopTarget()
	}
}

// readToken reads a token file: its content, surrounding space trimmed.
func readToken(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("token file: %w", err)
	}
	tok := []byte(strings.TrimSpace(string(b)))
	if len(tok) < 16 {
		return nil, fmt.Errorf("token file %s holds %d characters: a token is at least 16", path, len(tok))
	}
	return tok, nil
}

// sourceToken reads the source's token, making it first (32 random bytes
// in hex, mode 0600) if there is none.
func sourceToken(path string) ([]byte, error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		var b [32]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("make token file: %w", err)
		}
		if err == nil {
			_, err = f.WriteString(hex.EncodeToString(b[:]) + "\n")
			if err == nil {
				err = f.Sync()
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				os.Remove(path)
				return nil, fmt.Errorf("make token file: %w", err)
			}
		}
	}
	return readToken(path)
}

func (s *Server) mirrorStatus() MirrorStatus {
	st := MirrorStatus{Lineage: s.store.Lineage(), StoreID: s.store.StoreID(), Mirror: s.store.Mirror(), Last: s.store.LastTID()}
	if m := s.mirror; m != nil {
		if m.source != nil {
			ss := m.source.Status()
			st.Source = &ss
		}
		m.mu.Lock()
		t := m.target
		m.mu.Unlock()
		if t != nil {
			ts := t.Status()
			st.Target = &ts
		}
	}
	return st
}

func (s *Server) mirrorRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+PathMirrorStatus, func(w http.ResponseWriter, r *http.Request) {
		reply(w, s.mirrorStatus(), nil)
	})
	mux.HandleFunc("POST "+PathMirrorVerify, func(w http.ResponseWriter, r *http.Request) {
		m := s.mirror
		if m == nil || len(m.token) == 0 {
			reply(w, nil, errors.New("this server follows no source (mirror.source): asof mirror verify runs on a target"))
			return
		}
		stream(w, func(progress history.Progress) (any, error) {
			t := mirror.NewTarget(s.store, s.cfg.Mirror.Source, mirror.TargetOptions{Token: m.token, Logger: s.log, Name: "verify"})
			rep, err := t.Verify(r.Context(), func(n int64) { progress("paths", n, 0) })
			if err == nil {
				s.log.Info("mirror verify", "at", rep.At, "paths", rep.Paths, "differences", len(rep.Differences))
			}
			return rep, err
		})
	})
	mux.HandleFunc("POST "+PathMirrorPromote, func(w http.ResponseWriter, r *http.Request) {
		if !s.store.Mirror() {
			reply(w, nil, errors.New("the store is not a mirror"))
			return
		}
		if m := s.mirror; m != nil {
			m.stopTarget()
		}
		err := s.store.Promote()
		if err == nil && s.cfg.Mirror.Source != "" {
			s.log.Warn("mirror promoted: remove mirror.source from the configuration, or the next start refuses it", "source", s.cfg.Mirror.Source)
		}
		reply(w, MirrorPromoteReply{Lineage: s.store.Lineage(), Last: s.store.LastTID()}, err)
	})
}

// mirrorMetrics registers the mirror's figures: how far a target lags its
// source, the bytes it received, and on a source the targets connected and
// the furthest behind.
func (s *Server) mirrorMetrics(reg *prometheus.Registry) {
	gauge := func(name, help string, f func(MirrorStatus) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return f(s.mirrorStatus()) })
	}
	reg.MustRegister(
		gauge("asof_mirror_target_lag_seconds", "How far this target's newest transaction is behind its source's.", func(st MirrorStatus) float64 {
			if st.Target == nil {
				return 0
			}
			return st.Target.Lag.Seconds()
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "asof_mirror_target_received_bytes_total", Help: "Bytes this target received from its source."},
			func() float64 {
				if st := s.mirrorStatus(); st.Target != nil {
					return float64(st.Target.Bytes)
				}
				return 0
			}),
		gauge("asof_mirror_source_targets", "Targets pulling from this source now.", func(st MirrorStatus) float64 {
			if st.Source == nil {
				return 0
			}
			return float64(len(st.Source.Targets))
		}),
		gauge("asof_mirror_source_max_lag_seconds", "How far the furthest target pulling now is behind this source.", func(st MirrorStatus) float64 {
			var worst time.Duration
			if st.Source != nil {
				for _, t := range st.Source.Targets {
					worst = max(worst, t.Lag)
				}
			}
			return worst.Seconds()
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "asof_mirror_source_sent_bytes_total", Help: "Bytes this source sent to targets."},
			func() float64 {
				if m := s.mirror; m != nil && m.source != nil {
					return float64(m.source.SentBytes())
				}
				return 0
			}),
	)
}
