package server

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/asof/asof/config"
	"github.com/asof/asof/history"
)

// Volumes (docs/SPEC.md section 7): the config's list is added at start
// when the store does not have a volume yet (a volume the store has and
// the config does not list stays: it holds data); the control API adds,
// drains and removes volumes while the server serves.

// specOf is the store's description of a configured volume.
func specOf(v config.Volume) history.VolumeSpec {
	spec := history.VolumeSpec{Name: v.Name, Kind: v.Kind, Path: v.Path}
	if v.Kind == "s3" {
		spec.S3 = &history.S3Spec{Endpoint: v.S3.Endpoint, Bucket: v.S3.Bucket, Prefix: v.S3.Prefix,
			Region: v.S3.Region, CredentialsFile: v.S3.CredentialsFile, Profile: v.S3.Profile}
	}
	return spec
}

// addConfigVolumes adds the configured volumes the store does not have.
func addConfigVolumes(store *history.Store, vols []config.Volume) error {
	for _, v := range vols {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := store.AddVolume(ctx, specOf(v))
		cancel()
		if err != nil {
			return fmt.Errorf("config: volumes: %s: %w", v.Name, err)
		}
	}
	return nil
}

// addSpec is the volume an add request describes.
func addSpec(req VolumeAddRequest) (history.VolumeSpec, error) {
	if !strings.HasPrefix(req.Where, "s3://") {
		if req.Endpoint != "" || req.Region != "" || req.CredentialsFile != "" {
			return history.VolumeSpec{}, fmt.Errorf("%s is a directory: --endpoint, --region and --credentials-file are for s3:// volumes", req.Where)
		}
		if !strings.HasPrefix(req.Where, "/") {
			return history.VolumeSpec{}, fmt.Errorf("%s: give the directory as an absolute path", req.Where)
		}
		return history.VolumeSpec{Name: req.Name, Kind: "dir", Path: req.Where}, nil
	}
	bucket, prefix, err := history.ParseS3URL(req.Where)
	if err != nil {
		return history.VolumeSpec{}, err
	}
	if req.Endpoint == "" {
		return history.VolumeSpec{}, fmt.Errorf("%s: --endpoint is missing (the S3 store's URL, e.g. https://s3.eu-west-1.amazonaws.com)", req.Where)
	}
	return history.VolumeSpec{Name: req.Name, Kind: "s3", S3: &history.S3Spec{Endpoint: req.Endpoint, Bucket: bucket,
		Prefix: prefix, Region: req.Region, CredentialsFile: req.CredentialsFile}}, nil
}

func (s *Server) volumesReply(ctx context.Context) (VolumesReply, error) {
	vs, err := s.store.Volumes(ctx)
	return VolumesReply{Placement: history.PlacementRule, Volumes: vs, Cache: s.store.VolumeCache()}, err
}

func (s *Server) volumeRoutes(m *http.ServeMux) {
	m.HandleFunc("GET "+PathVolumes, func(w http.ResponseWriter, r *http.Request) {
		out, err := s.volumesReply(r.Context())
		reply(w, out, err)
	})
	m.HandleFunc("POST "+PathVolumeAdd, func(w http.ResponseWriter, r *http.Request) {
		var req VolumeAddRequest
		if !decode(w, r, &req) {
			return
		}
		spec, err := addSpec(req)
		if err == nil {
			ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
			err = s.store.AddVolume(ctx, spec)
			cancel()
		}
		s.log.Info("volume add", "name", req.Name, "where", req.Where, "err", err)
		if err != nil {
			reply(w, nil, err)
			return
		}
		out, err := s.volumesReply(r.Context())
		reply(w, out, err)
	})
	m.HandleFunc("POST "+PathVolumeDrain, func(w http.ResponseWriter, r *http.Request) {
		var req VolumeRequest
		if !decode(w, r, &req) {
			return
		}
		stream(w, func(progress history.Progress) (any, error) {
			err := s.store.DrainVolume(r.Context(), req.Name, progress)
			s.log.Info("volume drain", "name", req.Name, "err", err)
			if err != nil {
				return nil, err
			}
			return s.volumesReply(r.Context())
		})
	})
	m.HandleFunc("POST "+PathVolumeRemove, func(w http.ResponseWriter, r *http.Request) {
		var req VolumeRequest
		if !decode(w, r, &req) {
			return
		}
		err := s.store.RemoveVolume(r.Context(), req.Name)
		s.log.Info("volume remove", "name", req.Name, "err", err)
		if err != nil {
			reply(w, nil, err)
			return
		}
		out, err := s.volumesReply(r.Context())
		reply(w, out, err)
	})
}
