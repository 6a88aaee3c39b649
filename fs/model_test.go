package fs

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/asof/asof/history"
)

// The model-based test: random sequences of changes run against the file
// system and against a plain in-memory model of the tree, with the model
// remembered at every commit. Afterwards (and again after closing and
// reopening the store) every remembered moment, read back through @@ by
// transaction id, by time and through name@@ listings, must equal the model
// byte for byte.
//
// The changes are made by several callers (root and users with and without
// supplementary groups), and the model predicts every permission outcome
// by its own statement of the POSIX rules (mMay and its kin): owner, group
// and other bits, sticky directories (the root is one, like /tmp), setgid
// directories, who may chmod, chown and set times, and the setuid and
// setgid bits a change clears. Owners and groups are part of every moment
// read back.

// mNode is one object of the model. Hard links are several directory
// entries naming one mNode, so they share content.
type mNode struct {
	kind   history.Kind
	mode   uint32
	uid    uint32
	gid    uint32
	data   []byte
	target string
	mtime  int64          // files: the last data change
	ents   map[string]int // directories: name -> node id
	parent int            // directories: the parent's id
	links  int            // non-directories: the names it has
}

type mTree struct {
	nodes map[int]*mNode
	next  int
}

func newMTree(root Attr) *mTree {
	return &mTree{nodes: map[int]*mNode{0: {kind: history.KindDir, mode: root.Mode, uid: root.Uid, gid: root.Gid, ents: map[string]int{}}}, next: 1}
}

func (m *mTree) clone() *mTree {
	c := &mTree{nodes: make(map[int]*mNode, len(m.nodes)), next: m.next}
	for id, n := range m.nodes {
		cp := *n
		cp.data = slices.Clone(n.data)
		if n.ents != nil {
			cp.ents = make(map[string]int, len(n.ents))
			for k, v := range n.ents {
				cp.ents[k] = v
			}
		}
		c.nodes[id] = &cp
	}
	return c
}

func (m *mTree) add(n *mNode) int {
	id := m.next
	m.next++
	m.nodes[id] = n
	return id
}

// under reports whether directory a is b or lies below it.
func (m *mTree) under(a, b int) bool {
	for {
		if a == b {
			return true
		}
		if a == 0 {
			return false
		}
		a = m.nodes[a].parent
	}
}

func (m *mTree) nlink(id int) uint32 {
	n := m.nodes[id]
	if n.kind != history.KindDir {
		return uint32(n.links)
	}
	k := uint32(2)
	for _, c := range n.ents {
		if m.nodes[c].kind == history.KindDir {
			k++
		}
	}
	return k
}

// drop removes name from dir, ending the node with its last name.
func (m *mTree) drop(dir int, name string) {
	id := m.nodes[dir].ents[name]
	delete(m.nodes[dir].ents, name)
	n := m.nodes[id]
	if n.kind == history.KindDir {
		delete(m.nodes, id)
		return
	}
	n.links--
	if n.links == 0 {
		delete(m.nodes, id)
	}
}

type mEnt struct {
	dir     int
	dirPath string // "" for the root
	name    string
	id      int
	depth   int // of the entry: 1 for an entry of the root
}

func (e mEnt) path() string { return e.dirPath + "/" + e.name }

// walk lists every entry below the root, in a fixed order.
func (m *mTree) walk() []mEnt {
	var out []mEnt
	var rec func(dir int, p string, depth int)
	rec = func(dir int, p string, depth int) {
		names := make([]string, 0, len(m.nodes[dir].ents))
		for name := range m.nodes[dir].ents {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			id := m.nodes[dir].ents[name]
			out = append(out, mEnt{dir: dir, dirPath: p, name: name, id: id, depth: depth})
			if m.nodes[id].kind == history.KindDir {
				rec(id, p+"/"+name, depth+1)
			}
		}
	}
	rec(0, "", 1)
	return out
}

type mDir struct {
	id    int
	path  string // "" for the root
	depth int    // 0 for the root
}

func (m *mTree) dirs() []mDir {
	out := []mDir{{0, "", 0}}
	for _, e := range m.walk() {
		if m.nodes[e.id].kind == history.KindDir {
			out = append(out, mDir{e.id, e.path(), e.depth})
		}
	}
	return out
}

// moment is a remembered commit.
type moment struct {
	tid  history.TID
	tree *mTree
}

type modelRun struct {
	t       *testing.T
	e       *tEnv
	rng     *rand.Rand
	m       *mTree
	moments []moment
	log     []string // the ops so far, for failure messages
	stats   map[string]int
	thinned bool // moments holds only the kept moments of a pruned history
	seed    uint64
}

var modelNames = []string{"a", "b", "c", "d", "e", "f", "g", "h"}

const (
	modelMaxDepth = 4
	modelMaxFile  = 200 << 10
)

func (r *modelRun) fail(format string, args ...any) {
	r.t.Helper()
	from := max(0, len(r.log)-25)
	r.t.Fatalf("seed %d: %s\nlast ops:\n  %s", r.seed, fmt.Sprintf(format, args...), strings.Join(r.log[from:], "\n  "))
}

func (r *modelRun) node(p string) Node {
	r.t.Helper()
	n, err := r.e.f.Resolve(pRoot, p)
	if err != nil {
		r.fail("resolve %q: %v", p, err)
	}
	return n
}

func (r *modelRun) check(op string, err error, want syscall.Errno) bool {
	r.t.Helper()
	r.log = append(r.log, fmt.Sprintf("%s -> %v", op, Errno(err)))
	if got := Errno(err); got != want {
		r.fail("%s: errno %v (%v), the model says %v", op, got, err, want)
	}
	r.stats[strings.Fields(op)[0]+"/"+want.Error()]++
	return want == 0
}

func (r *modelRun) data(n int) []byte {
	p := make([]byte, n)
	switch r.rng.IntN(5) {
	case 0: // zeros: stored as holes
	case 1:
		b := byte(r.rng.IntN(256))
		for i := range p {
			p[i] = b
		}
	default:
		for i := range p {
			p[i] = byte(r.rng.Uint32())
		}
	}
	return p
}

func (r *modelRun) size() int {
	switch r.rng.IntN(10) {
	case 0:
		return 0
	case 1, 2:
		return r.rng.IntN(3 * history.ChunkSize)
	default:
		return 1 + r.rng.IntN(300)
	}
}

func (r *modelRun) pickDir() mDir {
	ds := r.m.dirs()
	return ds[r.rng.IntN(len(ds))]
}

// pickEnt picks an entry that ok accepts, if any.
func (r *modelRun) pickEnt(ok func(*mNode) bool) (mEnt, bool) {
	var es []mEnt
	for _, e := range r.m.walk() {
		if ok(r.m.nodes[e.id]) {
			es = append(es, e)
		}
	}
	if len(es) == 0 {
		return mEnt{}, false
	}
	return es[r.rng.IntN(len(es))], true
}

func anyNode(*mNode) bool        { return true }
func isFile(n *mNode) bool       { return n.kind == history.KindFile }
func notDir(n *mNode) bool       { return n.kind != history.KindDir }
func notSymlink(n *mNode) bool   { return n.kind != history.KindSymlink }
func dirPath(p string) string    { return "/" + strings.TrimPrefix(p, "/") }
func (r *modelRun) now() int64   { return r.e.clk.Now().UnixNano() }
func (r *modelRun) name() string { return modelNames[r.rng.IntN(len(modelNames))] }

// modelCaller is an identity the model's operations run as.
type modelCaller struct {
	name string
	c    Cred
}

// modelCallers: root, two users sharing group 1000 (one of them also in
// the supplementary group 2000), and a user alone in its own group.
var modelCallers = []modelCaller{
	{"root", Cred{}},
	{"u1000", Cred{Uid: 1000, Gid: 1000}},
	{"u1001", Cred{Uid: 1001, Gid: 1000, Groups: []uint32{2000}}},
	{"u1002", Cred{Uid: 1002, Gid: 1002}},
}

// The owners and groups chown hands out: the callers' and one of no caller.
var (
	modelUids = []uint32{0, 1000, 1001, 1002, 4242}
	modelGids = []uint32{0, 1000, 1002, 2000, 4242}
)

// caller picks who runs the next operation: root two times in five (so
// that the tree keeps growing where users may not write), else a user.
func (r *modelRun) caller() modelCaller {
	if r.rng.IntN(5) < 2 {
		return modelCallers[0]
	}
	return modelCallers[1+r.rng.IntN(len(modelCallers)-1)]
}

// The model's own statement of the POSIX permission rules, written apart
// from fs's so that each checks the other.

func mInGroup(c Cred, g uint32) bool { return c.Gid == g || slices.Contains(c.Groups, g) }

// mMay: the bits of c's class on n (owner, else group, else other) hold
// all of want. Root may do anything but execute what no one may execute.
func mMay(c Cred, n *mNode, want uint32) bool {
	if c.Uid == 0 {
		return want&AccessExec == 0 || n.kind == history.KindDir || n.mode&0o111 != 0
	}
	bits := n.mode & 7
	switch {
	case c.Uid == n.uid:
		bits = n.mode >> 6 & 7
	case mInGroup(c, n.gid):
		bits = n.mode >> 3 & 7
	}
	return bits&want == want
}

// mMayData: reading or writing a file's data. fs lets a (non-root) owner
// always, whatever the bits: knfsd's owner override, since NFS has no open.
func mMayData(c Cred, n *mNode, want uint32) bool {
	return c.Uid != 0 && c.Uid == n.uid || mMay(c, n, want)
}

// mMayRemove: from a sticky directory only root, the directory's owner and
// the victim's owner may remove or rename the victim.
func mMayRemove(c Cred, dir, victim *mNode) bool {
	return dir.mode&syscall.S_ISVTX == 0 || c.Uid == 0 || c.Uid == dir.uid || c.Uid == victim.uid
}

// mNew is a new object made by c in dir: the caller's owner and group, but
// the directory's group in a setgid directory, where a new directory is
// setgid too (mkdir itself never sets setgid). A non-root caller outside
// the new file's group cannot make it setgid.
func mNew(c Cred, dir *mNode, kind history.Kind, mode uint32) *mNode {
	n := &mNode{kind: kind, mode: mode & 0o7777, uid: c.Uid, gid: c.Gid, links: 1}
	if kind == history.KindDir {
		n.mode &= 0o1777
		n.ents = map[string]int{}
	}
	if dir.mode&syscall.S_ISGID != 0 {
		n.gid = dir.gid
		if kind == history.KindDir {
			n.mode |= syscall.S_ISGID
		}
	}
	if kind != history.KindDir && n.mode&syscall.S_ISGID != 0 && c.Uid != 0 && !mInGroup(c, n.gid) {
		n.mode &^= syscall.S_ISGID
	}
	return n
}

// mKillSetID: a file's data changed by anyone but root loses setuid, and
// setgid where group execute makes it mean "run as the group".
func mKillSetID(c Cred, n *mNode) {
	if c.Uid != 0 {
		mChownMode(n)
	}
}

// mChownMode: what a chown does to a non-directory's mode, whoever does it.
func mChownMode(n *mNode) {
	if n.kind == history.KindDir {
		return
	}
	n.mode &^= syscall.S_ISUID
	if n.mode&0o010 != 0 {
		n.mode &^= syscall.S_ISGID
	}
}

// searchable reports whether c may search directory id and every one
// above it: what resolving a name in id needs.
func (m *mTree) searchable(c Cred, id int) bool {
	for {
		if !mMay(c, m.nodes[id], AccessExec) {
			return false
		}
		if id == 0 {
			return true
		}
		id = m.nodes[id].parent
	}
}

// mPath is a path an operation resolves: in is the directory its last
// component is in, -1 for the root itself.
type mPath struct {
	p  string
	in int
}

func (r *modelRun) dirAt(d mDir) mPath {
	if d.id == 0 {
		return mPath{"/", -1}
	}
	return mPath{dirPath(d.path), r.m.nodes[d.id].parent}
}

func entAt(e mEnt) mPath { return mPath{e.path(), e.dir} }

// reach resolves an operation's paths as its caller does, which needs
// search permission on every directory on the way; or, half the time, as
// a client that holds the handles from before (resolved as root). ok is
// false where the walk was refused, as the model said it would be.
func (r *modelRun) reach(who modelCaller, op string, ps ...mPath) (ns []Node, ok bool) {
	r.t.Helper()
	asRoot := who.c.Uid == 0 || r.rng.IntN(2) == 0
	for _, p := range ps {
		if asRoot {
			ns = append(ns, r.node(p.p))
			continue
		}
		want := syscall.Errno(0)
		if p.in >= 0 && !r.m.searchable(who.c, p.in) {
			want = syscall.EACCES
		}
		n, err := r.e.f.Resolve(who.c, p.p)
		if want != 0 || err != nil {
			r.check(fmt.Sprintf("walk %s for %s", p.p, op), err, want)
			return nil, false
		}
		ns = append(ns, n)
	}
	return ns, true
}

// step runs one random operation on both, as a random caller.
func (r *modelRun) step() {
	m, f := r.m, r.e.f
	who := r.caller()
	c, as := who.c, " as "+who.name
	r.e.clk.Add(time.Duration(1+r.rng.IntN(1000)) * time.Microsecond)
	// mayChange: what making or removing a name in directory id needs.
	mayChange := func(id int) bool { return mMay(c, m.nodes[id], AccessWrite|AccessExec) }
	switch k := r.rng.IntN(100); {
	case k < 12: // create
		d, name := r.pickDir(), r.name()
		mode := []uint32{0o644, 0o600, 0o755, 0o444, 0o4755, 0o2755, 0o2745, 0o666}[r.rng.IntN(8)]
		op := fmt.Sprintf("create %s/%s %o%s", d.path, name, mode, as)
		ns, ok := r.reach(who, op, r.dirAt(d))
		if !ok {
			return
		}
		want := syscall.Errno(0)
		if !mayChange(d.id) {
			want = syscall.EACCES
		} else if _, ok := m.nodes[d.id].ents[name]; ok {
			want = syscall.EEXIST
		}
		_, _, err := f.Create(c, ns[0], name, mode, true)
		if r.check(op, err, want) {
			n := mNew(c, m.nodes[d.id], history.KindFile, mode)
			n.mtime = r.now()
			m.nodes[d.id].ents[name] = m.add(n)
		}
	case k < 30: // write
		e, ok := r.pickEnt(isFile)
		if !ok {
			return
		}
		n := m.nodes[e.id]
		var off int
		switch r.rng.IntN(4) {
		case 0:
			off = 0
		case 1:
			off = len(n.data)
		case 2:
			off = r.rng.IntN(len(n.data) + 1)
		default:
			off = len(n.data) + r.rng.IntN(2*history.ChunkSize)
		}
		p := r.data(r.size())
		appendMode := r.rng.IntN(6) == 0
		if appendMode {
			off = len(n.data)
		}
		if off+len(p) > modelMaxFile {
			return
		}
		op := fmt.Sprintf("write %s off %d len %d append %v%s", e.path(), off, len(p), appendMode, as)
		ns, ok := r.reach(who, op, entAt(e))
		if !ok {
			return
		}
		want := syscall.Errno(0)
		if !mMayData(c, n, AccessWrite) {
			want = syscall.EACCES
		}
		fileOff := off
		if appendMode {
			fileOff = r.rng.IntN(10) // ignored
		}
		k, err := f.Write(c, ns[0], p, int64(fileOff), appendMode)
		if r.check(op, err, want) {
			if k != len(p) {
				r.fail("%s: wrote %d", op, k)
			}
			if len(p) == 0 {
				break // a write of nothing changes nothing (POSIX)
			}
			if end := off + len(p); end > len(n.data) {
				n.data = append(n.data, make([]byte, end-len(n.data))...)
			}
			copy(n.data[off:], p)
			n.mtime = r.now()
			mKillSetID(c, n)
		}
	case k < 37: // truncate
		e, ok := r.pickEnt(isFile)
		if !ok {
			return
		}
		n := m.nodes[e.id]
		var size int
		switch r.rng.IntN(4) {
		case 0:
			size = 0
		case 1:
			size = r.rng.IntN(len(n.data) + 1)
		case 2:
			size = len(n.data) + r.rng.IntN(1000)
		default:
			size = len(n.data) + r.rng.IntN(3*history.ChunkSize)
		}
		if size > modelMaxFile {
			return
		}
		op := fmt.Sprintf("truncate %s %d (from %d)%s", e.path(), size, len(n.data), as)
		ns, ok := r.reach(who, op, entAt(e))
		if !ok {
			return
		}
		want := syscall.Errno(0)
		if !mMayData(c, n, AccessWrite) {
			want = syscall.EACCES
		}
		_, err := f.Setattr(c, ns[0], SetAttr{Size: u64(uint64(size))})
		if r.check(op, err, want) {
			if size != len(n.data) {
				// Only a change of size is a change of data.
				n.mtime = r.now()
				mKillSetID(c, n)
			}
			if size < len(n.data) {
				n.data = n.data[:size]
			} else {
				n.data = append(n.data, make([]byte, size-len(n.data))...)
			}
		}
	case k < 46: // mkdir
		d, name := r.pickDir(), r.name()
		if d.depth >= modelMaxDepth {
			return
		}
		mode := []uint32{0o755, 0o700, 0o2755, 0o1777, 0o777, 0o2775, 0o3777}[r.rng.IntN(7)]
		op := fmt.Sprintf("mkdir %s/%s %o%s", d.path, name, mode, as)
		ns, ok := r.reach(who, op, r.dirAt(d))
		if !ok {
			return
		}
		want := syscall.Errno(0)
		if !mayChange(d.id) {
			want = syscall.EACCES
		} else if _, ok := m.nodes[d.id].ents[name]; ok {
			want = syscall.EEXIST
		}
		_, err := f.Mkdir(c, ns[0], name, mode)
		if r.check(op, err, want) {
			n := mNew(c, m.nodes[d.id], history.KindDir, mode)
			n.parent = d.id
			m.nodes[d.id].ents[name] = m.add(n)
		}
	case k < 59: // rename
		e, ok := r.pickEnt(anyNode)
		if !ok {
			return
		}
		d, name := r.pickDir(), r.name()
		if r.rng.IntN(3) == 0 {
			d = mDir{id: e.dir, path: e.dirPath} // within one directory
		}
		src := m.nodes[e.id]
		op := fmt.Sprintf("rename %s -> %s/%s%s", e.path(), d.path, name, as)
		want := syscall.Errno(0)
		dst, exists := m.nodes[d.id].ents[name]
		moved := e.dir != d.id
		// In the order fs checks. Linux differs where two errors apply: it
		// refuses a move into the moved directory's own subtree (EINVAL)
		// before checking permissions, and a sticky target (EPERM) before
		// a target of the wrong type.
		switch {
		case !mayChange(e.dir) || !mayChange(d.id):
			want = syscall.EACCES
		case !mMayRemove(c, m.nodes[e.dir], src):
			want = syscall.EPERM
		case src.kind == history.KindDir && moved && !mMay(c, src, AccessWrite):
			want = syscall.EACCES // its ".." changes
		case src.kind == history.KindDir && moved && m.under(d.id, e.id):
			want = syscall.EINVAL
		case !exists:
		case dst == e.id:
		case src.kind == history.KindDir && m.nodes[dst].kind != history.KindDir:
			want = syscall.ENOTDIR
		case src.kind != history.KindDir && m.nodes[dst].kind == history.KindDir:
			want = syscall.EISDIR
		case !mMayRemove(c, m.nodes[d.id], m.nodes[dst]):
			want = syscall.EPERM
		case m.nodes[dst].kind == history.KindDir && len(m.nodes[dst].ents) > 0:
			want = syscall.ENOTEMPTY
		}
		if want == 0 && src.kind == history.KindDir && depthBelow(m, e.id)+dirDepth(m, d.id)+1 > modelMaxDepth+1 {
			return // keep the tree shallow
		}
		ns, ok := r.reach(who, op, r.dirAt(mDir{id: e.dir, path: e.dirPath}), r.dirAt(d))
		if !ok {
			return
		}
		err := f.Rename(c, ns[0], e.name, ns[1], name)
		if r.check(op, err, want) && dst != e.id {
			if exists {
				m.drop(d.id, name)
			}
			delete(m.nodes[e.dir].ents, e.name)
			m.nodes[d.id].ents[name] = e.id
			if src.kind == history.KindDir {
				src.parent = d.id
			}
		}
	case k < 65: // link
		e, ok := r.pickEnt(notDir)
		if !ok {
			return
		}
		d, name := r.pickDir(), r.name()
		op := fmt.Sprintf("link %s -> %s/%s%s", e.path(), d.path, name, as)
		ns, ok := r.reach(who, op, entAt(e), r.dirAt(d))
		if !ok {
			return
		}
		want := syscall.Errno(0)
		if !mayChange(d.id) {
			want = syscall.EACCES
		} else if _, ok := m.nodes[d.id].ents[name]; ok {
			want = syscall.EEXIST
		}
		err := f.Link(c, ns[0], ns[1], name)
		if r.check(op, err, want) {
			m.nodes[d.id].ents[name] = e.id
			m.nodes[e.id].links++
		}
	case k < 73: // unlink
		e, ok := r.pickEnt(anyNode)
		if !ok {
			return
		}
		op := fmt.Sprintf("unlink %s%s", e.path(), as)
		ns, ok := r.reach(who, op, r.dirAt(mDir{id: e.dir, path: e.dirPath}))
		if !ok {
			return
		}
		want := syscall.Errno(0)
		switch {
		case !mayChange(e.dir):
			want = syscall.EACCES
		case m.nodes[e.id].kind == history.KindDir:
			want = syscall.EISDIR
		case !mMayRemove(c, m.nodes[e.dir], m.nodes[e.id]):
			want = syscall.EPERM
		}
		if r.check(op, f.Remove(c, ns[0], e.name, false), want) {
			m.drop(e.dir, e.name)
		}
	case k < 79: // rmdir: mostly of a directory, mostly of an empty one
		pred := anyNode
		switch r.rng.IntN(3) {
		case 0:
			pred = func(n *mNode) bool { return n.kind == history.KindDir }
		case 1:
			pred = func(n *mNode) bool { return n.kind == history.KindDir && len(n.ents) == 0 }
		}
		e, ok := r.pickEnt(pred)
		if !ok {
			return
		}
		op := fmt.Sprintf("rmdir %s%s", e.path(), as)
		ns, ok := r.reach(who, op, r.dirAt(mDir{id: e.dir, path: e.dirPath}))
		if !ok {
			return
		}
		want := syscall.Errno(0)
		n := m.nodes[e.id]
		switch {
		case !mayChange(e.dir):
			want = syscall.EACCES
		case n.kind != history.KindDir:
			want = syscall.ENOTDIR
		case !mMayRemove(c, m.nodes[e.dir], n):
			want = syscall.EPERM
		case len(n.ents) > 0:
			want = syscall.ENOTEMPTY
		}
		if r.check(op, f.Remove(c, ns[0], e.name, true), want) {
			m.drop(e.dir, e.name)
		}
	case k < 84: // symlink
		d, name := r.pickDir(), r.name()
		target := fmt.Sprintf("../%s/%08x", r.name(), r.rng.Uint32())[:3+r.rng.IntN(10)]
		op := fmt.Sprintf("symlink %s/%s -> %s%s", d.path, name, target, as)
		ns, ok := r.reach(who, op, r.dirAt(d))
		if !ok {
			return
		}
		want := syscall.Errno(0)
		if !mayChange(d.id) {
			want = syscall.EACCES
		} else if _, ok := m.nodes[d.id].ents[name]; ok {
			want = syscall.EEXIST
		}
		_, err := f.Symlink(c, ns[0], name, target)
		if r.check(op, err, want) {
			n := mNew(c, m.nodes[d.id], history.KindSymlink, 0o777)
			n.target = target
			m.nodes[d.id].ents[name] = m.add(n)
		}
	case k < 86: // mkfifo
		d, name := r.pickDir(), r.name()
		mode := []uint32{0o640, 0o2660}[r.rng.IntN(2)]
		op := fmt.Sprintf("mkfifo %s/%s %o%s", d.path, name, mode, as)
		ns, ok := r.reach(who, op, r.dirAt(d))
		if !ok {
			return
		}
		want := syscall.Errno(0)
		if !mayChange(d.id) {
			want = syscall.EACCES
		} else if _, ok := m.nodes[d.id].ents[name]; ok {
			want = syscall.EEXIST
		}
		_, err := f.Mknod(c, ns[0], name, NewAttr{Kind: history.KindFifo, Mode: mode})
		if r.check(op, err, want) {
			m.nodes[d.id].ents[name] = m.add(mNew(c, m.nodes[d.id], history.KindFifo, mode))
		}
	case k < 91: // chmod: its owner or root; setgid only inside the file's group
		e, ok := r.pickEnt(notSymlink)
		if !ok {
			return
		}
		n := m.nodes[e.id]
		mode := uint32(r.rng.IntN(0o10000))
		op := fmt.Sprintf("chmod %s %04o%s", e.path(), mode, as)
		ns, ok := r.reach(who, op, entAt(e))
		if !ok {
			return
		}
		want := syscall.Errno(0)
		if c.Uid != 0 && c.Uid != n.uid {
			want = syscall.EPERM
		}
		_, err := f.Setattr(c, ns[0], SetAttr{Mode: &mode})
		if r.check(op, err, want) {
			if c.Uid != 0 && !mInGroup(c, n.gid) {
				mode &^= syscall.S_ISGID
			}
			n.mode = mode
		}
	case k < 95: // chown and chgrp
		e, ok := r.pickEnt(anyNode)
		if !ok {
			return
		}
		n := m.nodes[e.id]
		var s SetAttr
		what := r.rng.IntN(3)
		if what != 1 {
			s.Uid = u32(modelUids[r.rng.IntN(len(modelUids))])
		}
		if what != 0 {
			s.Gid = u32(modelGids[r.rng.IntN(len(modelGids))])
		}
		op := fmt.Sprintf("chown %s %s%s", e.path(), showIDs(s), as)
		ns, ok := r.reach(who, op, entAt(e))
		if !ok {
			return
		}
		// Root may anything; an owner may only change the group, and only
		// to one of its own.
		want := syscall.Errno(0)
		switch {
		case c.Uid == 0:
		case c.Uid != n.uid, s.Uid != nil && *s.Uid != n.uid:
			want = syscall.EPERM
		case s.Gid != nil && *s.Gid != n.gid && !mInGroup(c, *s.Gid):
			want = syscall.EPERM
		}
		_, err := f.Setattr(c, ns[0], s)
		if r.check(op, err, want) {
			if s.Uid != nil {
				n.uid = *s.Uid
			}
			if s.Gid != nil {
				n.gid = *s.Gid
			}
			mChownMode(n)
		}
	case k < 97: // utimes: an explicit time needs ownership, "now" write permission
		e, ok := r.pickEnt(anyNode)
		if !ok {
			return
		}
		n := m.nodes[e.id]
		owner := c.Uid == 0 || c.Uid == n.uid
		var s SetAttr
		var t time.Time
		want := syscall.Errno(0)
		if r.rng.IntN(2) == 0 {
			t = tEnvStart.Add(-time.Duration(r.rng.Int64N(int64(1000 * 24 * time.Hour))))
			s.Mtime = &t
			if !owner {
				want = syscall.EPERM
			}
		} else {
			s.MtimeNow = true
			if !owner && !mMay(c, n, AccessWrite) {
				want = syscall.EACCES
			}
		}
		op := fmt.Sprintf("utimes %s %v%s", e.path(), s.Mtime != nil, as)
		ns, ok := r.reach(who, op, entAt(e))
		if !ok {
			return
		}
		_, err := f.Setattr(c, ns[0], s)
		if r.check(op, err, want) {
			if s.Mtime != nil {
				n.mtime = t.UnixNano()
			} else {
				n.mtime = r.now()
			}
		}
	case k < 99: // read
		e, ok := r.pickEnt(isFile)
		if !ok {
			return
		}
		n := m.nodes[e.id]
		op := fmt.Sprintf("read %s%s", e.path(), as)
		ns, ok := r.reach(who, op, entAt(e))
		if !ok {
			return
		}
		want := syscall.Errno(0)
		if !mMayData(c, n, AccessRead) {
			want = syscall.EACCES
		}
		buf := make([]byte, len(n.data)+10)
		k, err := f.Read(c, ns[0], buf, 0)
		if r.check(op, err, want) && !bytes.Equal(buf[:k], n.data) {
			r.fail("%s: read %d bytes, not the model's %d", op, k, len(n.data))
		}
	default: // readdir
		d := r.pickDir()
		op := fmt.Sprintf("readdir %s%s", dirPath(d.path), as)
		ns, ok := r.reach(who, op, r.dirAt(d))
		if !ok {
			return
		}
		want := syscall.Errno(0)
		if !mMay(c, m.nodes[d.id], AccessRead) {
			want = syscall.EACCES
		}
		var got []string
		err := f.ReadDir(c, ns[0], "", func(d Dirent) bool { got = append(got, d.Name); return true })
		if r.check(op, err, want) {
			var names []string
			for name := range m.nodes[d.id].ents {
				names = append(names, name)
			}
			sort.Strings(names)
			if !slices.Equal(got, names) {
				r.fail("%s: lists %v, the model %v", op, got, names)
			}
		}
	}
}

func showIDs(s SetAttr) string {
	id := func(p *uint32) string {
		if p == nil {
			return "-"
		}
		return fmt.Sprint(*p)
	}
	return id(s.Uid) + ":" + id(s.Gid)
}

// dirDepth is how deep directory id lies (the root is 0).
func dirDepth(m *mTree, id int) int {
	d := 0
	for id != 0 {
		id = m.nodes[id].parent
		d++
	}
	return d
}

// depthBelow is the height of the tree below directory id.
func depthBelow(m *mTree, id int) int {
	h := 0
	for _, c := range m.nodes[id].ents {
		if m.nodes[c].kind == history.KindDir {
			h = max(h, 1+depthBelow(m, c))
		}
	}
	return h
}

// commit commits after moving the clock on by seconds to days, and
// remembers the model as of the new transaction.
func (r *modelRun) commit() {
	var d time.Duration
	switch r.rng.IntN(4) {
	case 0:
		d = time.Duration(1+r.rng.IntN(59)) * time.Second
	case 1:
		d = time.Duration(1+r.rng.IntN(59)) * time.Minute
	case 2:
		d = time.Duration(1+r.rng.IntN(23)) * time.Hour
	default:
		d = time.Duration(1+r.rng.IntN(30)) * 24 * time.Hour
	}
	// Nanoseconds too, so times read back to the last digit.
	d += time.Duration(r.rng.IntN(1e9))
	now := r.e.clk.Add(d)
	tid, err := r.e.s.Commit()
	if err != nil {
		r.fail("commit: %v", err)
	}
	r.log = append(r.log, fmt.Sprintf("commit %s (%s)", FormatTID(uint64(tid)), FormatVersionName(uint64(tid))))
	if last := r.moments[len(r.moments)-1]; tid == last.tid {
		return // nothing was pending
	}
	if tid != history.TIDAt(now) {
		r.fail("commit at %v made transaction %s, want the clock's %s", now, FormatTID(uint64(tid)), FormatTID(uint64(history.TIDAt(now))))
	}
	r.moments = append(r.moments, moment{tid, r.m.clone()})
}

// verifyDir compares the directory n with the model's directory id,
// recursively. inos maps model nodes to the inode numbers seen for them.
func (r *modelRun) verifyDir(label string, n Node, m *mTree, id int, p string, inos map[int]uint64) {
	r.t.Helper()
	f := r.e.f
	md := m.nodes[id]
	want := make([]string, 0, len(md.ents))
	for name := range md.ents {
		want = append(want, name)
	}
	sort.Strings(want)
	var got []Dirent
	if err := f.ReadDir(pRoot, n, "", func(d Dirent) bool { got = append(got, d); return true }); err != nil {
		r.fail("%s: readdir %s: %v", label, p, err)
	}
	gotNames := make([]string, len(got))
	for i, d := range got {
		gotNames[i] = d.Name
	}
	if !slices.Equal(gotNames, want) {
		r.fail("%s: %s lists %v, the model has %v", label, dirPath(p), gotNames, want)
	}
	if len(got) > 1 {
		var rest []string
		f.ReadDir(pRoot, n, got[0].Name, func(d Dirent) bool { rest = append(rest, d.Name); return true })
		if !slices.Equal(rest, want[1:]) {
			r.fail("%s: %s lists after %q: %v", label, dirPath(p), got[0].Name, rest)
		}
	}
	for _, d := range got {
		cid := md.ents[d.Name]
		mn := m.nodes[cid]
		cp := p + "/" + d.Name
		if d.Kind != mn.kind {
			r.fail("%s: %s listed as %v, the model has %v", label, cp, d.Kind, mn.kind)
		}
		c, err := f.Lookup(pRoot, n, d.Name)
		if err != nil {
			r.fail("%s: lookup %s: %v", label, cp, err)
		}
		if c != d.Node {
			r.fail("%s: lookup %s = %+v, readdir said %+v", label, cp, c, d.Node)
		}
		r.verifyNode(label, c, m, cid, cp, inos)
	}
}

// verifyNode compares one object with the model's node id.
func (r *modelRun) verifyNode(label string, c Node, m *mTree, id int, p string, inos map[int]uint64) {
	r.t.Helper()
	f := r.e.f
	mn := m.nodes[id]
	a, err := f.Getattr(c)
	if err != nil {
		r.fail("%s: getattr %s: %v", label, p, err)
	}
	if a.Kind != mn.kind || a.Mode != mn.mode || a.Nlink != m.nlink(id) || a.Uid != mn.uid || a.Gid != mn.gid {
		r.fail("%s: %s is %v mode %04o nlink %d owner %d:%d; the model has %v mode %04o nlink %d owner %d:%d",
			label, p, a.Kind, a.Mode, a.Nlink, a.Uid, a.Gid, mn.kind, mn.mode, m.nlink(id), mn.uid, mn.gid)
	}
	if inos != nil {
		if ino, ok := inos[id]; ok && ino != a.Ino {
			r.fail("%s: %s has inode %x, another name of it %x", label, p, a.Ino, ino)
		}
		inos[id] = a.Ino
	}
	switch mn.kind {
	case history.KindFile:
		if a.Size != uint64(len(mn.data)) {
			r.fail("%s: %s has size %d, the model %d", label, p, a.Size, len(mn.data))
		}
		if a.Mtime.UnixNano() != mn.mtime {
			r.fail("%s: %s has mtime %v, the model %v", label, p, a.Mtime.UTC(), time.Unix(0, mn.mtime).UTC())
		}
		buf := make([]byte, len(mn.data)+100)
		k, err := f.Read(pRoot, c, buf, 0)
		if err != nil {
			r.fail("%s: read %s: %v", label, p, err)
		}
		if !bytes.Equal(buf[:k], mn.data) {
			i := 0
			for i < min(k, len(mn.data)) && buf[i] == mn.data[i] {
				i++
			}
			r.fail("%s: %s reads %d bytes differing from the model's %d at offset %d", label, p, k, len(mn.data), i)
		}
	case history.KindSymlink:
		if a.Size != uint64(len(mn.target)) {
			r.fail("%s: symlink %s has size %d", label, p, a.Size)
		}
		tg, err := f.Readlink(c)
		if err != nil || tg != mn.target {
			r.fail("%s: readlink %s = %q %v, the model %q", label, p, tg, err, mn.target)
		}
	case history.KindDir:
		r.verifyDir(label, c, m, id, p, inos)
	}
}

// verifyMoment reads one remembered moment back every way there is.
func (r *modelRun) verifyMoment(i int, mo moment, pick *rand.Rand) {
	r.t.Helper()
	f := r.e.f
	tid := uint64(mo.tid)
	forms := []string{
		FormatTID(tid),
		FormatVersionName(tid),
		time.Unix(0, int64(tid)).In(time.FixedZone("", -(5*3600 + 30*60))).Format("2006-01-02T15:04:05.000000000-07:00"),
	}
	if i+1 < len(r.moments) && !r.thinned {
		// Just before the next commit: still this moment (unless history
		// was thinned: then the next kept moment may be far later).
		forms = append(forms, FormatTID(uint64(r.moments[i+1].tid)-1))
	}
	var inos map[int]uint64
	for j, w := range forms {
		label := fmt.Sprintf("moment %d (%s) as /@@%s", i, FormatVersionName(tid), w)
		n, err := f.Resolve(pRoot, "/@@"+w)
		if err != nil {
			r.fail("%s: %v", label, err)
		}
		if n.Obj != history.RootID || (j < 3 && n.At != mo.tid) {
			r.fail("%s: resolved to %+v", label, n)
		}
		switch {
		case j == 2:
			// The same node as the forms above: it reads the same.
		case j == 3 && i%4 != 0:
			// Only some moments are walked a third time, to keep it fast.
		default:
			seen := map[int]uint64{}
			r.verifyNode(label, n, mo.tree, 0, "", seen)
			if j == 0 {
				inos = seen
			} else if j == 1 {
				for id, ino := range seen {
					if inos[id] != ino {
						r.fail("%s: inode numbers differ between forms of one moment", label)
					}
				}
			}
		}
	}
	// @@ on the first component: everything below it is of that moment.
	ents := mo.tree.walk()
	for _, e := range ents {
		if e.depth >= 2 && pick.IntN(2) == 0 {
			first, rest, _ := strings.Cut(strings.TrimPrefix(e.path(), "/"), "/")
			hp := "/" + first + "@@" + FormatVersionName(tid) + "/" + rest
			n, err := f.Resolve(pRoot, hp)
			if err != nil {
				r.fail("moment %d as %s: %v", i, hp, err)
			}
			r.verifyNode(fmt.Sprintf("moment %d as %s", i, hp), n, mo.tree, e.id, e.path(), nil)
			break
		}
	}
	// name@@ listings: for some files, the listing's entry for the
	// version current at this moment reads the model's bytes.
	var files, dirs []mEnt
	for _, e := range ents {
		switch mo.tree.nodes[e.id].kind {
		case history.KindFile, history.KindSymlink:
			files = append(files, e)
		case history.KindDir:
			dirs = append(dirs, e)
		}
	}
	pick.Shuffle(len(files), func(a, b int) { files[a], files[b] = files[b], files[a] })
	pick.Shuffle(len(dirs), func(a, b int) { dirs[a], dirs[b] = dirs[b], dirs[a] })
	check := files[:min(4, len(files))]
	check = append(check, dirs[:min(1, len(dirs))]...)
	for _, e := range check {
		label := fmt.Sprintf("moment %d (%s) through %s@@", i, FormatVersionName(tid), e.path())
		dir, err := f.Resolve(pRoot, "/@@"+FormatTID(tid)+e.dirPath)
		if err != nil {
			r.fail("%s: %v", label, err)
		}
		vd, err := f.Lookup(pRoot, dir, e.name+"@@")
		if err != nil {
			r.fail("%s: %v", label, err)
		}
		if !vd.Versions {
			r.fail("%s: not a version listing: %+v", label, vd)
		}
		va, err := f.Getattr(vd)
		if err != nil || va.Kind != history.KindDir || va.Mode != 0o555 {
			r.fail("%s: listing attrs %+v %v", label, va, err)
		}
		var names []string
		if err := f.ReadDir(pRoot, vd, "", func(d Dirent) bool { names = append(names, d.Name); return true }); err != nil {
			r.fail("%s: readdir: %v", label, err)
		}
		if !sort.StringsAreSorted(names) || len(slices.Compact(slices.Clone(names))) != len(names) {
			r.fail("%s: listing not sorted or has duplicates: %v", label, names)
		}
		// The newest version at or before this moment.
		key := FormatVersionName(tid)
		k := sort.SearchStrings(names, key)
		if k < len(names) && names[k] == key {
			k++
		}
		if k == 0 {
			r.fail("%s: no version at or before %s in %v", label, key, names)
		}
		entry := names[k-1]
		vt, ok := ParseVersionName(entry)
		if !ok || vt > tid {
			r.fail("%s: entry %q", label, entry)
		}
		vn, err := f.Lookup(pRoot, vd, entry)
		if err != nil {
			r.fail("%s: lookup %s: %v", label, entry, err)
		}
		mn := mo.tree.nodes[e.id]
		if mn.kind == history.KindDir {
			// The directory's own entries are those of the moment (its
			// children may have changed since that version, it has not).
			var got []string
			f.ReadDir(pRoot, vn, "", func(d Dirent) bool { got = append(got, d.Name); return true })
			var want []string
			for name := range mn.ents {
				want = append(want, name)
			}
			sort.Strings(want)
			if !slices.Equal(got, want) {
				r.fail("%s/%s lists %v, the model %v", label, entry, got, want)
			}
			continue
		}
		r.verifyNode(label+"/"+entry, vn, mo.tree, e.id, e.path(), nil)
		// The same bytes through the path form name@@/<entry>.
		pn, err := f.Resolve(pRoot, "/@@"+FormatTID(tid)+e.path()+"@@/"+entry)
		if err != nil || pn != vn {
			r.fail("%s: resolve path form: %+v %v", label, pn, err)
		}
	}
}

func (r *modelRun) verifyAll(what string) {
	r.t.Helper()
	pick := rand.New(rand.NewPCG(7, 7))
	for i, mo := range r.moments {
		r.verifyMoment(i, mo, pick)
	}
	// Distinct moments give distinct inode numbers for the root.
	seen := map[uint64]int{}
	for i, mo := range r.moments {
		a, err := r.e.f.Getattr(Node{Obj: history.RootID, At: mo.tid})
		if err != nil {
			r.fail("%s: root at moment %d: %v", what, i, err)
		}
		if j, ok := seen[a.Ino]; ok {
			r.fail("%s: moments %d and %d share the root's inode number", what, j, i)
		}
		seen[a.Ino] = i
	}
}

// runModel makes ops random changes from seed on a new file system,
// committing now and then, the model remembered at every commit.
func runModel(t *testing.T, seed uint64, ops int) *modelRun {
	e := newTEnv(t)
	r := &modelRun{t: t, e: e, rng: rand.New(rand.NewPCG(seed, 0x5eed)), stats: map[string]int{}, seed: seed}
	root := e.attr(e.f.Root())
	// A new store's root is like /tmp, owned by the server process.
	if root.Mode != 0o1777 || root.Uid != uint32(os.Getuid()) || root.Gid != uint32(os.Getgid()) {
		t.Fatalf("new root: mode %04o owner %d:%d, want 1777 %d:%d", root.Mode, root.Uid, root.Gid, os.Getuid(), os.Getgid())
	}
	r.m = newMTree(root)
	r.moments = []moment{{e.s.LastTID(), r.m.clone()}}
	for i := 0; i < ops; i++ {
		r.step()
		if r.rng.IntN(12) == 0 {
			r.commit()
		}
	}
	r.commit()
	return r
}

func TestModel(t *testing.T) {
	seeds, ops := []uint64{1, 2, 3, 4}, 1600
	if testing.Short() {
		seeds, ops = seeds[:2], 800
	}
	total := 0
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			r := runModel(t, seed, ops)
			e := r.e
			// A few changes left uncommitted: they are live, not history.
			for i := 0; i < 20; i++ {
				r.step()
			}
			r.verifyNode("live", e.f.Root(), r.m, 0, "", map[int]uint64{})
			r.verifyAll("after the run")
			final := r.m.clone()
			e.reopen()
			// Reopening committed what was pending; the live tree is the same.
			r.verifyNode("live after reopen", e.f.Root(), final, 0, "", map[int]uint64{})
			r.verifyAll("after reopen")
			total += len(r.log)
			t.Logf("seed %d: %d ops, %d moments, %d objects at the end; %v", seed, len(r.log), len(r.moments), len(r.m.nodes), r.stats)
		})
	}
	t.Logf("%d ops in total", total)
}
