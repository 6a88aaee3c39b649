package server

import (
	"encoding/json"
	"time"

	"github.com/asof/asof/fs"
	"github.com/asof/asof/history"
	"github.com/asof/asof/mirror"
)

// The control API is JSON over HTTP on a unix socket (mode 0600: whoever
// can reach it administers the store). The asof admin commands are its
// clients, through the types below, so both ends share one definition of
// every body; curl --unix-socket works too.
//
//	GET  /v1/stats                        -> StatsReply
//	GET  /v1/history?path=/docs/a.txt     -> []fs.VersionInfo
//	POST /v1/clone    CloneRequest        -> CloneReply
//	POST /v1/restore  RestoreRequest      -> RestoreReply
//	POST /v1/verify                       -> StreamLine per line; the report is a history.Report
//	POST /v1/prune    PruneRequest        -> StreamLine per line; the report is a history.PruneReport
//	GET  /v1/volumes                      -> VolumesReply
//	POST /v1/volumes/add    VolumeAddRequest -> VolumesReply
//	POST /v1/volumes/drain  VolumeRequest    -> StreamLine per line (bytes moved); the report is a VolumesReply
//	POST /v1/volumes/remove VolumeRequest    -> VolumesReply
//	GET  /v1/mirror/status                -> MirrorStatus
//	POST /v1/mirror/verify                -> StreamLine per line (paths compared); the report is a mirror.VerifyReport
//	POST /v1/mirror/promote               -> MirrorPromoteReply
//
// POST /v1/verify takes an optional VerifyRequest.
//
// Errors answer 4xx/5xx with an APIError.
const (
	PathStats   = "/v1/stats"
	PathHistory = "/v1/history"
	PathClone   = "/v1/clone"
	PathRestore = "/v1/restore"
	PathVerify  = "/v1/verify"
	PathPrune   = "/v1/prune"

	PathVolumes      = "/v1/volumes"
	PathVolumeAdd    = "/v1/volumes/add"
	PathVolumeDrain  = "/v1/volumes/drain"
	PathVolumeRemove = "/v1/volumes/remove"

	PathMirrorStatus  = "/v1/mirror/status"
	PathMirrorVerify  = "/v1/mirror/verify"
	PathMirrorPromote = "/v1/mirror/promote"
)

// VerifyRequest is the optional body of POST /v1/verify.
type VerifyRequest struct {
	Deep bool `json:"deep"` // read every pack of S3 volumes too, not only check each is there
}

// VolumesReply lists the volumes, the placement rule and, once an S3
// volume opened it, the read cache.
type VolumesReply struct {
	Placement string                   `json:"placement"`
	Volumes   []history.VolumeInfo     `json:"volumes"`
	Cache     *history.VolumeCacheInfo `json:"cache,omitempty"`
}

// VolumeAddRequest is the body of POST /v1/volumes/add: Where is an
// absolute directory or s3://BUCKET/PREFIX (then Endpoint is needed).
// It carries no credential: the server's own are used.
type VolumeAddRequest struct {
	Name            string `json:"name"`
	Where           string `json:"where"`
	Endpoint        string `json:"endpoint,omitempty"`
	Region          string `json:"region,omitempty"`
	CredentialsFile string `json:"credentials_file,omitempty"`
}

// VolumeRequest names a volume (drain, remove).
type VolumeRequest struct {
	Name string `json:"name"`
}

// MirrorStatus is the answer to GET /v1/mirror/status: the store's
// identity, and the mirrors it serves or follows.
type MirrorStatus struct {
	Lineage string               `json:"lineage"`
	StoreID string               `json:"store_id"`
	Mirror  bool                 `json:"mirror"` // the store is a read-only mirror
	Last    history.TID          `json:"last"`
	Source  *mirror.SourceStatus `json:"source,omitempty"` // serving targets
	Target  *mirror.TargetStatus `json:"target,omitempty"` // following a source
}

// MirrorPromoteReply says what a promoted mirror is now: writable, with a
// lineage of its own.
type MirrorPromoteReply struct {
	Lineage string      `json:"lineage"`
	Last    history.TID `json:"last"`
}

// APIError is the body of a failed request.
type APIError struct {
	Error string `json:"error"`
	Errno string `json:"errno,omitempty"`
}

// StreamLine is one line of a long operation's answer (verify, prune):
// progress lines, then one line with the report or the error.
type StreamLine struct {
	Stage  string          `json:"stage,omitempty"`
	Done   int64           `json:"done,omitempty"`
	Total  int64           `json:"total,omitempty"`
	Report json.RawMessage `json:"report,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// StatsReply is the answer to GET /v1/stats: the store's figures, the
// retention policy, and what the last cleaner pass did.
type StatsReply struct {
	fs.Stats
	Retention string     `json:"retention"`
	LastPrune *LastPrune `json:"last_prune,omitempty"`
}

// LastPrune sums up the newest cleaner pass that changed something.
type LastPrune struct {
	At           time.Time `json:"at"`
	Records      int64     `json:"records"`
	StoredBefore int64     `json:"stored_before"`
	StoredAfter  int64     `json:"stored_after"`
}

// CloneRequest is the body of POST /v1/clone: paths inside the served
// tree; Src may name a past moment (/docs@@2007-08-06).
type CloneRequest struct {
	Src string `json:"src"`
	Dst string `json:"dst"`
}

// CloneReply says what was cloned, once it is committed.
type CloneReply struct {
	Src string `json:"src"`
	Dst string `json:"dst"`
}

// RestoreRequest is the body of POST /v1/restore: a path with the moment
// to restore, /docs@@2007-08-06.
type RestoreRequest struct {
	Path string `json:"path"`
}

// RestoreReply says which live path was restored from which moment, once
// it is committed.
type RestoreReply struct {
	Path     string `json:"path"`     // as requested, with its @@
	Restored string `json:"restored"` // the live path now changed
}

// PruneRequest is the body of POST /v1/prune.
type PruneRequest struct {
	DryRun bool `json:"dry_run"`
}
