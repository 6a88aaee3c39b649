package server

import (
	"encoding/json"
	"time"

	"github.com/asof/asof/fs"
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
//
// Errors answer 4xx/5xx with an APIError.
const (
	PathStats   = "/v1/stats"
	PathHistory = "/v1/history"
	PathClone   = "/v1/clone"
	PathRestore = "/v1/restore"
	PathVerify  = "/v1/verify"
	PathPrune   = "/v1/prune"
)

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
