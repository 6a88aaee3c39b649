package volume

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestS3FailureLogIsOneLineThenOneAMinute drives the failure log with a
// clock of its own: a line when the store fails, none for the failures
// that follow within a minute (nor for a store that comes and goes), one
// a minute while it stays down, and one when it is back.
func TestS3FailureLogIsOneLineThenOneAMinute(t *testing.T) {
	var buf bytes.Buffer
	clock := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	s := &S3{where: "s3://b/", log: slog.New(slog.NewTextHandler(&buf, nil)), now: func() time.Time { return clock }}
	down := &unavailable{where: "s3://b/", cause: "connection refused"}
	step := func(d time.Duration) { clock = clock.Add(d) }
	lines := func() int { return strings.Count(buf.String(), "\n") }

	s.failed(down, clock)
	if lines() != 1 || !strings.Contains(buf.String(), "S3 volume failing") {
		t.Fatalf("first failure:\n%s", buf.String())
	}
	for range 100 {
		step(500 * time.Millisecond)
		s.failed(down, clock)
	}
	if lines() != 1 {
		t.Fatalf("failures within a minute logged:\n%s", buf.String())
	}
	step(11 * time.Second)
	s.failed(down, clock)
	if lines() != 2 || !strings.Contains(buf.String(), "still failing") {
		t.Fatalf("a minute on:\n%s", buf.String())
	}
	begun := clock
	step(time.Second)
	s.up()
	if lines() != 3 || !strings.Contains(buf.String(), "answering again") {
		t.Fatalf("back:\n%s", buf.String())
	}
	s.failed(down, begun) // a try begun before it came back
	if s.down || lines() != 3 {
		t.Fatalf("a stale failure counted:\n%s", buf.String())
	}
	// Coming and going within a minute: no more lines.
	for range 10 {
		step(time.Second)
		s.failed(down, clock)
		step(time.Second)
		s.up()
	}
	if lines() != 3 {
		t.Fatalf("a flapping store logged every flap:\n%s", buf.String())
	}
	step(time.Minute)
	s.failed(down, clock)
	if lines() != 4 || !strings.Contains(buf.String()[strings.LastIndex(buf.String()[:len(buf.String())-1], "\n"):], "S3 volume failing") {
		t.Fatalf("failing again a minute later:\n%s", buf.String())
	}
	// A refusal (wrong credentials) is logged the same way; other errors are not.
	s.up()
	n := lines()
	s.failed(&refused{"credentials refused"}, clock)
	if lines() != n {
		t.Fatal("a refusal within the minute was logged")
	}
	if !s.down {
		t.Fatal("a refusal did not mark the volume failing")
	}
}
