package nfs

import (
	"fmt"
	"log/slog"

	gonfs "github.com/willscott/go-nfs"
)

// quietLogger routes go-nfs's own log lines into slog: its errors as
// warnings (most are a client's mistake, answered with an NFS status), the
// rest as debug lines.
type quietLogger struct{ l *slog.Logger }

func (q quietLogger) SetLevel(gonfs.LogLevel)                   {}
func (q quietLogger) GetLevel() gonfs.LogLevel                  { return gonfs.WarnLevel }
func (q quietLogger) ParseLevel(string) (gonfs.LogLevel, error) { return gonfs.WarnLevel, nil }
func (q quietLogger) Panic(a ...any)                            { q.l.Error("go-nfs: " + fmt.Sprint(a...)) }
func (q quietLogger) Fatal(a ...any)                            { q.l.Error("go-nfs: " + fmt.Sprint(a...)) }
func (q quietLogger) Error(a ...any)                            { q.l.Warn("go-nfs: " + fmt.Sprint(a...)) }
func (q quietLogger) Warn(a ...any)                             { q.l.Warn("go-nfs: " + fmt.Sprint(a...)) }
func (q quietLogger) Info(a ...any)                             { q.l.Debug("go-nfs: " + fmt.Sprint(a...)) }
func (q quietLogger) Debug(a ...any)                            { q.l.Debug("go-nfs: " + fmt.Sprint(a...)) }
func (q quietLogger) Trace(a ...any)                            {}
func (q quietLogger) Print(a ...any)                            { q.l.Debug("go-nfs: " + fmt.Sprint(a...)) }
func (q quietLogger) Panicf(f string, a ...any)                 { q.l.Error("go-nfs: " + fmt.Sprintf(f, a...)) }
func (q quietLogger) Fatalf(f string, a ...any)                 { q.l.Error("go-nfs: " + fmt.Sprintf(f, a...)) }
func (q quietLogger) Errorf(f string, a ...any)                 { q.l.Warn("go-nfs: " + fmt.Sprintf(f, a...)) }
func (q quietLogger) Warnf(f string, a ...any)                  { q.l.Warn("go-nfs: " + fmt.Sprintf(f, a...)) }
func (q quietLogger) Infof(f string, a ...any)                  { q.l.Debug("go-nfs: " + fmt.Sprintf(f, a...)) }
func (q quietLogger) Debugf(f string, a ...any)                 { q.l.Debug("go-nfs: " + fmt.Sprintf(f, a...)) }
func (q quietLogger) Tracef(string, ...any)                     {}
func (q quietLogger) Printf(f string, a ...any)                 { q.l.Debug("go-nfs: " + fmt.Sprintf(f, a...)) }
