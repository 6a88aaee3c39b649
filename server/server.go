// Package server wires the engine, the file system and the protocol
// adapters together, runs them, and serves the control API.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
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

	conns     *conns         // NFS and 9P clients
	listeners []net.Listener // control and metrics
	https     []*http.Server // control and metrics
	wg        sync.WaitGroup // control and metrics servers
	stopClean chan struct{}  // closed to stop the cleaner
	pmu       sync.Mutex
	lastPrune *LastPrune
	observer  fs.Observer
	mirror    *mirrorState // server/mirror.go
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
	if err := prepareMirror(cfg); err != nil {
		return nil, err
	}
	store, err := history.Open(cfg.Data, history.Options{FlushInterval: cfg.History.FlushInterval, VolumeCacheBytes: cfg.VolumeCache, Logger: log})
	if err != nil {
		if errors.Is(err, history.ErrLocked) {
			return nil, fmt.Errorf("%s is in use by another asof server (only one may serve a data directory): %w", cfg.Data, err)
		}
		return nil, fmt.Errorf("open store %s: %w", cfg.Data, err)
	}
	if err := addConfigVolumes(store, cfg.Volumes); err != nil {
		store.Close()
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, store: store, Addrs: map[string]string{}}
	s.conns = newConns(log, cfg.Exports.Allows)
	s.fs = fs.New(store, fs.Options{
		Location: cfg.History.Timezone,
		ReadOnly: cfg.Exports.ReadOnly,
		Logger:   log,
		Squash:   cfg.Exports.Squash,
		Anon:     &fs.Cred{Uid: cfg.Exports.AnonUID, Gid: cfg.Exports.AnonGID},
	})
	if err := s.startServices(); err != nil {
		s.stop(context.Background())
		store.Close()
		return nil, err
	}
	return s, nil
}

// FS is the file system being served.
func (s *Server) FS() *fs.FS { return s.fs }

// nfsServer is the NFSv3 and MOUNT server.
func (s *Server) nfsServer() (ConnServer, error) {
	key, err := nfs.LoadKey(s.cfg.Data)
	if err != nil {
		return nil, err
	}
	return nfs.New(s.fs, nfs.Options{Logger: s.log, Key: key, Observer: s.observer}), nil
}

// ninepServer is the 9P2000.L server.
func (s *Server) ninepServer() ConnServer {
	return ninep.New(s.fs, ninep.Options{Logger: s.log, Observer: s.observer})
}

// listenProtocol listens for a protocol's clients; conns owns the
// listener from here on.
func (s *Server) listenProtocol(addr, name string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: listen on %s: %w", name, addr, err)
	}
	s.Addrs[name] = l.Addr().String()
	return l, nil
}

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
		s.mirrorMetrics(reg)
		if err := s.startMetrics(reg); err != nil {
			return err
		}
	}
	if s.cfg.NFS.Listen != "" {
		h, err := s.nfsServer()
		if err != nil {
			return err
		}
		l, err := s.listenProtocol(s.cfg.NFS.Listen, "nfs")
		if err != nil {
			return err
		}
		s.conns.serve("nfs", l, h)
	}
	if s.cfg.NineP.Listen != "" {
		l, err := s.listenProtocol(s.cfg.NineP.Listen, "9p")
		if err != nil {
			return err
		}
		s.conns.serve("9p", l, s.ninepServer())
	}
	if err := s.startControl(); err != nil {
		return err
	}
	if err := s.startMirror(); err != nil {
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

// stop ends every service: no new client, the calls in flight finished
// (until ctx is done, then their connections are closed), the control
// API, metrics and cleaner stopped. The store stays open.
func (s *Server) stop(ctx context.Context) {
	var drain sync.WaitGroup
	drain.Add(1)
	go func() {
		defer drain.Done()
		s.conns.shutdown(ctx)
	}()
	// Admin requests in flight (a clone, a verify) finish too, within the
	// same deadline.
	for _, srv := range s.https {
		drain.Add(1)
		go func() {
			defer drain.Done()
			if srv.Shutdown(ctx) != nil {
				srv.Close()
			}
		}()
	}
	drain.Wait()
	for _, l := range s.listeners {
		l.Close()
	}
	s.stopMirror()
	if s.stopClean != nil {
		close(s.stopClean)
		s.stopClean = nil
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// Shutdown stops accepting clients, lets the calls in flight finish until
// ctx is done, commits what is buffered and closes the store.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stop(ctx)
	err := s.store.Close()
	if err == nil {
		s.log.Info("store closed; every change is committed")
	}
	return err
}
