// Command mirrorfill makes the trees integration/bench/mirror.sh compares:
// the same files in an asof store (through fs, with no server running) and
// in a plain directory, so that asof mirror pull, rsync and tar copy the
// same content.
//
//	mirrorfill -data SRC -plain DIR -dirs 1000 -files 100 -size 1024   # make the tree
//	mirrorfill -data SRC -plain DIR -change 100 -seed 2                # change 100 files in both
//	mirrorfill -data SRC -plain DIR -big 1073741824                    # add one file of that size
package main

import (
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/asof/asof/fs"
	"github.com/asof/asof/history"
)

func main() {
	data := flag.String("data", "", "the asof data directory (no server may be running on it)")
	plain := flag.String("plain", "", "the plain directory")
	dirs := flag.Int("dirs", 1000, "directories")
	files := flag.Int("files", 100, "files per directory")
	size := flag.Int("size", 1024, "bytes per file")
	change := flag.Int("change", 0, "change this many existing files instead of making the tree")
	big := flag.Int64("big", 0, "add one file of this many bytes instead")
	seed := flag.Uint64("seed", 1, "content seed")
	flag.Parse()
	s, err := history.Open(*data, history.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	f := fs.New(s, fs.Options{})
	root := fs.Cred{}
	rnd := rand.New(rand.NewPCG(*seed, 7))
	content := func(n int) []byte {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(rnd.Uint32())
		}
		return p
	}
	put := func(dir fs.Node, rel, name string, p []byte) {
		n, _, err := f.Create(root, dir, name, 0o644, false)
		if err != nil {
			log.Fatal(err)
		}
		zero := uint64(0)
		if _, err := f.Setattr(root, n, fs.SetAttr{Size: &zero}); err != nil {
			log.Fatal(err)
		}
		for off := 0; off < len(p); off += 1 << 20 {
			if _, err := f.Write(root, n, p[off:min(off+1<<20, len(p))], int64(off), false); err != nil {
				log.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(*plain, rel, name), p, 0o644); err != nil {
			log.Fatal(err)
		}
	}
	switch {
	case *big > 0:
		put(f.Root(), "", fmt.Sprintf("big-%d", *seed), content(int(*big)))
	case *change > 0:
		for i := 0; i < *change; i++ {
			d, k := rnd.IntN(*dirs), rnd.IntN(*files)
			rel, name := fmt.Sprintf("d%04d", d), fmt.Sprintf("f%04d", k)
			dir, err := f.Resolve(root, "/"+rel)
			if err != nil {
				log.Fatal(err)
			}
			put(dir, rel, name, content(*size))
		}
	default:
		for d := 0; d < *dirs; d++ {
			rel := fmt.Sprintf("d%04d", d)
			dir, err := f.Mkdir(root, f.Root(), rel, 0o755)
			if err != nil {
				log.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Join(*plain, rel), 0o755); err != nil {
				log.Fatal(err)
			}
			for k := 0; k < *files; k++ {
				put(dir, rel, fmt.Sprintf("f%04d", k), content(*size))
			}
		}
	}
	if _, err := f.Commit(); err != nil {
		log.Fatal(err)
	}
}
