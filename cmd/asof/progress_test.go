package main

import (
	"bytes"
	"testing"
)

// Away from a terminal, progress writes a line when a stage starts and
// when it ends, so that a short verify still logs every stage it ran.
func TestProgressLogsEveryStage(t *testing.T) {
	var b bytes.Buffer
	p := newProgress(&b, "verify")
	for _, s := range []struct {
		stage       string
		done, total int64
	}{
		{"log", 0, 2}, {"log", 1, 2}, {"log", 2, 2},
		{"blocks", 10, 100}, {"blocks", 50, 100}, {"blocks", 100, 100},
		{"index", 0, 1}, {"index", 1, 1},
	} {
		p.show(s.stage, s.done, s.total)
	}
	p.done()
	const want = "verify: log 0.0%\nverify: log 100.0%\nverify: blocks 10.0%\nverify: blocks 100.0%\n" +
		"verify: index 0.0%\nverify: index 100.0%\n"
	if b.String() != want {
		t.Fatalf("progress wrote\n%s\nwant\n%s", b.String(), want)
	}
}
