// Package server wires the engine, the file system and the protocol
// adapters together, runs them, and serves the control API.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"

	"github.com/asof/asof/config"
	"github.com/asof/asof/fs"
	"github.com/asof/asof/history"
	"github.com/asof/asof/nfs"
	"github.com/asof/asof/ninep"
)

// Server is a running asof.
type Server struct {
	cfg   *config.Config
	log   *slog.Logger
	store *history.Store
	fs    *fs.FS

	listeners []net.Listener
	wg        sync.WaitGroup
	stopClean chan struct{} // closed to stop the cleaner
	pmu       sync.Mutex
	lastPrune *LastPrune
	observer  fs.Observer
	// Addrs are the addresses actually listened on, by service name
	// ("nfs", "9p", "control"), for tests that listen on port 0.
	Addrs map[string]string
}

// Start opens the store and starts every configured service. It returns
// once they all listen.
func Start(cfg *config.Config, log *slog.Logger) (*Server, error) {
	if err := os.MkdirAll(cfg.Data, 0o755); err != nil {
		return nil, fmt.Errorf("create data directory %s: %w", cfg.Data, err)
	}
	store, err := history.Open(cfg.Data, history.Options{FlushInterval: cfg.History.FlushInterval, Logger: log})
	if err != nil {
		if errors.Is(err, history.ErrLocked) {
			return nil, fmt.Errorf("%s is in use by another asof server (only one may serve a data directory): %w", cfg.Data, err)
		}
		return nil, fmt.Errorf("open store %s: %w", cfg.Data, err)
	}
	s := &Server{cfg: cfg, log: log, store: store, Addrs: map[string]string{}}
	s.warnUnbuilt()
	s.fs = fs.New(store, fs.Options{Location: cfg.History.Timezone, ReadOnly: cfg.Exports.ReadOnly, Logger: log})
	if err := s.startServices(); err != nil {
		s.closeListeners()
		s.wg.Wait()
		store.Close()
		return nil, err
	}
	return s, nil
}

// warnUnbuilt says which configured features this build does not have
// yet, rather than ignoring them in silence. None of them loses data.
func (s *Server) warnUnbuilt() {
	if len(s.cfg.Volumes) > 0 {
		s.log.Warn("volumes are configured but this build keeps every block in the data directory", "data", s.cfg.Data)
	}
}

// FS is the file system being served.
func (s *Server) FS() *fs.FS { return s.fs }

func (s *Server) cred() fs.Cred {
	return fs.Cred{Uid: s.cfg.Exports.UID, Gid: s.cfg.Exports.GID}
}

func (s *Server) allow(a netip.Addr) bool { return s.cfg.Exports.Allows(a) }

func (s *Server) listen(network, addr, name string) (net.Listener, error) {
	l, err := net.Listen(network, addr)
	if err != nil {
		return nil, fmt.Errorf("%s: listen on %s: %w", name, addr, err)
	}
	s.listeners = append(s.listeners, l)
	s.Addrs[name] = l.Addr().String()
	return l, nil
}

func (s *Server) startServices() error {
	s.observer = fs.NopObserver{}
	if s.cfg.Metrics.Listen != "" {
		m, reg := newMetrics(s)
		s.observer = m
		if err := s.startMetrics(reg); err != nil {
			return err
		}
	}
	if s.cfg.NFS.Listen != "" {
		key, err := nfs.LoadKey(s.cfg.Data)
		if err != nil {
			return err
		}
		l, err := s.listen("tcp", s.cfg.NFS.Listen, "nfs")
		if err != nil {
			return err
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			l := &allowListener{Listener: l, proto: "nfs", allow: s.allow, log: s.log}
			srv := nfs.New(s.fs, nfs.Options{Logger: s.log, Key: key, Observer: s.observer})
			for {
				c, err := l.Accept()
				if err != nil {
					if !errors.Is(err, net.ErrClosed) {
						s.log.Error("nfs server stopped", "err", err)
					}
					return
				}
				go srv.ServeConn(context.Background(), c)
			}
		}()
	}
	if s.cfg.NineP.Listen != "" {
		l, err := s.listen("tcp", s.cfg.NineP.Listen, "9p")
		if err != nil {
			return err
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			l := &allowListener{Listener: l, proto: "9p", allow: s.allow, log: s.log}
			err := ninep.Serve(l, s.fs, ninep.Options{Cred: s.cred(), Logger: s.log, Observer: s.observer})
			if err != nil {
				s.log.Error("9P server stopped", "err", err)
			}
		}()
	}
	if err := s.startControl(); err != nil {
		return err
	}
	s.logMounts()
	if p := s.policy(); len(p) > 0 {
		if err := p.Validate(); err != nil {
			return fmt.Errorf("retention: %w", err)
		}
		s.log.Info("cleaner: thinning history by the retention policy", "rules", fmt.Sprint(s.cfg.Retention), "every", cleanEvery(p))
	}
	s.startCleaner()
	return nil
}

// logMounts says where asof listens and how to mount it.
func (s *Server) logMounts() {
	if a, ok := s.Addrs["nfs"]; ok {
		host, port, _ := net.SplitHostPort(a)
		s.log.Info("serving NFSv3 (MOUNT and NFS on one port)", "addr", a,
			"linux", fmt.Sprintf("mount -t nfs -o vers=3,tcp,port=%s,mountport=%s,mountproto=tcp,nolock %s:/ /mnt/asof", port, port, host),
			"macos", fmt.Sprintf("mount -t nfs -o vers=3,tcp,port=%s,mountport=%s,nolocks,resvport %s:/ /Volumes/asof", port, port, host))
	}
	if a, ok := s.Addrs["9p"]; ok {
		host, port, _ := net.SplitHostPort(a)
		s.log.Info("serving 9P2000.L", "addr", a,
			"linux", fmt.Sprintf("mount -t 9p -o trans=tcp,port=%s,version=9p2000.L %s /mnt/asof", port, host))
	}
	if a, ok := s.Addrs["metrics"]; ok {
		s.log.Info("serving Prometheus metrics", "url", "http://"+a+"/metrics")
	}
	if a, ok := s.Addrs["control"]; ok {
		s.log.Info("control socket", "path", a)
	}
	s.log.Info("data directory", "path", absPath(s.cfg.Data))
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

func (s *Server) closeListeners() {
	for _, l := range s.listeners {
		l.Close()
	}
	if s.stopClean != nil {
		close(s.stopClean)
		s.stopClean = nil
	}
}

// Shutdown stops accepting clients, commits what is buffered and closes
// the store.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closeListeners()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	err := s.store.Close()
	if err == nil {
		s.log.Info("store closed; every change is committed")
	}
	return err
}
