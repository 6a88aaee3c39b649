package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/asof/asof/fs"
	"github.com/asof/asof/history"
)

// startControl serves the admin API on the control socket.
func (s *Server) startControl() error {
	p := s.cfg.Control.Socket
	if p == "" {
		return nil
	}
	// A socket left by a crashed server is in the way, and replaced: a
	// live server would hold the store lock, which Start already took.
	l, err := listenPrivate(p)
	if err != nil {
		return fmt.Errorf("control: listen on %s: %w", p, err)
	}
	s.listeners = append(s.listeners, l)
	s.Addrs["control"] = p
	srv := &http.Server{Handler: s.controlMux(), ReadHeaderTimeout: 10 * time.Second}
	s.https = append(s.https, srv)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := srv.Serve(l); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("control API stopped", "err", err)
		}
	}()
	return nil
}

func (s *Server) controlMux() *http.ServeMux {
	m := http.NewServeMux()
	admin := fs.Cred{} // the control socket is root's door: 0600, owner only
	m.HandleFunc("GET "+PathStats, func(w http.ResponseWriter, r *http.Request) {
		st, err := s.fs.Stats()
		out := StatsReply{Stats: st, Retention: "keep everything"}
		if len(s.cfg.Retention) > 0 {
			out.Retention = fmt.Sprint(s.cfg.Retention)
		}
		s.pmu.Lock()
		out.LastPrune = s.lastPrune
		s.pmu.Unlock()
		reply(w, out, err)
	})
	m.HandleFunc("GET "+PathHistory, func(w http.ResponseWriter, r *http.Request) {
		vs, err := s.fs.History(admin, r.URL.Query().Get("path"))
		reply(w, vs, err)
	})
	m.HandleFunc("POST "+PathClone, func(w http.ResponseWriter, r *http.Request) {
		var req CloneRequest
		if !decode(w, r, &req) {
			return
		}
		_, err := s.fs.Clone(admin, req.Src, req.Dst)
		if err == nil {
			err = s.fs.Sync()
		}
		s.log.Info("clone", "src", req.Src, "dst", req.Dst, "err", err)
		reply(w, CloneReply(req), err)
	})
	m.HandleFunc("POST "+PathRestore, func(w http.ResponseWriter, r *http.Request) {
		var req RestoreRequest
		if !decode(w, r, &req) {
			return
		}
		_, err := s.fs.Restore(admin, req.Path)
		if err == nil {
			err = s.fs.Sync()
		}
		s.log.Info("restore", "path", req.Path, "err", err)
		reply(w, RestoreReply{Path: req.Path, Restored: fs.LivePath(req.Path)}, err)
	})
	m.HandleFunc("POST "+PathVerify, func(w http.ResponseWriter, r *http.Request) {
		var req VerifyRequest
		if r.ContentLength != 0 && !decode(w, r, &req) {
			return
		}
		stream(w, func(progress history.Progress) (any, error) {
			verify := s.store.Verify
			if req.Deep {
				verify = s.store.VerifyDeep
			}
			rep, err := verify(progress)
			if err == nil {
				s.log.Info("verify", "frames", rep.Frames, "records", rep.Records, "blocks", rep.Blocks, "problems", len(rep.Problems))
			}
			return rep, err
		})
	})
	m.HandleFunc("POST "+PathPrune, func(w http.ResponseWriter, r *http.Request) {
		var req PruneRequest
		if !decode(w, r, &req) {
			return
		}
		stream(w, func(progress history.Progress) (any, error) {
			return s.prune(req.DryRun, false, progress)
		})
	})
	s.volumeRoutes(m)
	s.mirrorRoutes(m)
	return m
}

// stream answers a long operation: progress lines at most five a second,
// then its result or error.
func stream(w http.ResponseWriter, run func(history.Progress) (any, error)) {
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	fl, _ := w.(http.Flusher)
	last := time.Time{}
	res, err := run(func(stage string, done, total int64) {
		if time.Since(last) < 200*time.Millisecond && done < total {
			return
		}
		last = time.Now()
		enc.Encode(StreamLine{Stage: stage, Done: done, Total: total})
		if fl != nil {
			fl.Flush()
		}
	})
	if err == nil {
		var b []byte
		if b, err = json.Marshal(res); err == nil {
			enc.Encode(StreamLine{Report: b})
			return
		}
	}
	enc.Encode(StreamLine{Error: err.Error()})
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields() // a field this server does not know is a client it does not match
	if err := dec.Decode(v); err != nil {
		writeJSON(w, http.StatusBadRequest, APIError{Error: "bad request: " + err.Error()})
		return false
	}
	return true
}

func reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		code := http.StatusBadRequest
		e := fs.Errno(err)
		switch e {
		case syscall.ENOENT:
			code = http.StatusNotFound
		case syscall.EIO:
			code = http.StatusInternalServerError
		}
		writeJSON(w, code, APIError{Error: err.Error(), Errno: errnoName(e)})
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func errnoName(e syscall.Errno) string {
	names := map[syscall.Errno]string{
		syscall.ENOENT: "ENOENT", syscall.EEXIST: "EEXIST", syscall.EINVAL: "EINVAL", syscall.EROFS: "EROFS",
		syscall.EACCES: "EACCES", syscall.EPERM: "EPERM", syscall.ENOTDIR: "ENOTDIR", syscall.EISDIR: "EISDIR",
		syscall.ENOTEMPTY: "ENOTEMPTY", syscall.ENAMETOOLONG: "ENAMETOOLONG", syscall.EIO: "EIO", syscall.ENOSPC: "ENOSPC",
	}
	if n, ok := names[e]; ok {
		return n
	}
	return fmt.Sprintf("errno %d", int(e))
}
