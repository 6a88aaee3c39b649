package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// progress draws a bar on a terminal and writes a line now and then
// otherwise.
type progress struct {
	w     io.Writer
	name  string
	tty   bool
	last  time.Time
	stage string
	drawn bool
}

func newProgress(w io.Writer, name string) *progress {
	p := &progress{w: w, name: name}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

func (p *progress) show(stage string, done, total int64) {
	pct := 100.0
	if total > 0 {
		pct = 100 * float64(done) / float64(total)
	}
	newStage := stage != p.stage
	p.stage = stage
	if p.tty {
		if newStage && p.drawn {
			fmt.Fprintln(p.w) // each stage keeps a bar of its own
		}
		n := int(pct / 5)
		fmt.Fprintf(p.w, "\r%-7s [%-20s] %5.1f%%", stage, strings.Repeat("=", n), pct)
		p.drawn = true
		return
	}
	// Not a terminal: a line when a stage starts or ends, and every two
	// seconds in between.
	if newStage || done >= total || time.Since(p.last) > 2*time.Second {
		p.last = time.Now()
		fmt.Fprintf(p.w, "%s: %s %.1f%%\n", p.name, stage, pct)
	}
}

func (p *progress) done() {
	if p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
