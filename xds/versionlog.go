package xds

// A type's versions with a log of the changes that says what each name was
// before. What a stream was sent (deltastream.go) and what a node ACKed
// (acked.go) are kept relative to one, so a stream in sync costs no map
// entry per resource.

// versionLog is one type's versions and their log.
type versionLog struct {
	versions map[string]string
	seq      uint64         // counts changes
	log      []logChange    // oldest first; change i is log[i-dropped]
	dropped  int            // changes no longer in the log
	start    uint64         // the log holds every change after this seq
	last     map[string]int // each name's latest change still in the log
	maxLog   int
}

// logChange is one change of a name: prev is its version before,
// back the name's change before it (-1: none in the log).
type logChange struct {
	seq  uint64
	name string
	prev holding
	back int
}

// maxLog bounds a log; what refers to a seq before the changes it drops
// is first moved past them (pinLocked, rebase).
const maxLog = 1 << 16

func newVersionLog() *versionLog {
	return &versionLog{versions: map[string]string{}, last: map[string]int{}, maxLog: maxLog}
}

// set records the version of name ("" for none).
func (s *versionLog) set(name, version string) {
	old, had := s.versions[name]
	if had == (version != "") && old == version {
		return
	}
	s.seq++
	back := -1
	if i, ok := s.last[name]; ok {
		back = i
	}
	s.log = append(s.log, logChange{seq: s.seq, name: name, prev: holding{version: old, has: had}, back: back})
	s.last[name] = s.dropped + len(s.log) - 1
	if version == "" {
		delete(s.versions, name)
	} else {
		s.versions[name] = version
	}
}

// current is the version of name now.
func (s *versionLog) current(name string) holding {
	v, ok := s.versions[name]
	return holding{version: v, has: ok}
}

// at is the version of name at seq (which must not be before start).
func (s *versionLog) at(name string, seq uint64) holding {
	i, ok := s.last[name]
	if !ok || s.log[i-s.dropped].seq <= seq {
		return s.current(name)
	}
	for {
		e := s.log[i-s.dropped]
		if e.back < s.dropped || s.log[e.back-s.dropped].seq <= seq {
			return e.prev
		}
		i = e.back
	}
}

// since calls f for each name changed after seq (which must not be before
// start), once, with what was served of it at seq.
func (s *versionLog) since(seq uint64, f func(name string, was holding)) {
	lo, hi := 0, len(s.log)
	for lo < hi {
		m := (lo + hi) / 2
		if s.log[m].seq <= seq {
			lo = m + 1
		} else {
			hi = m
		}
	}
	for _, e := range s.log[lo:] {
		if e.back < s.dropped+lo {
			f(e.name, e.prev) // the name's first change after seq
		}
	}
}

// trimPoint is the start the log would have after trim, or 0 when it is
// not long enough to trim.
func (s *versionLog) trimPoint() uint64 {
	if len(s.log) <= s.maxLog {
		return 0
	}
	return s.log[len(s.log)-s.maxLog/2-1].seq
}

// trim drops the log's older half; the caller has first moved every state
// that refers to a seq before trimPoint past it.
func (s *versionLog) trim() {
	drop := len(s.log) - s.maxLog/2
	for i, e := range s.log[:drop] {
		if s.last[e.name] == s.dropped+i {
			delete(s.last, e.name)
		}
	}
	s.start = s.log[drop-1].seq
	s.dropped += drop
	s.log = append([]logChange(nil), s.log[drop:]...)
}

// holding is what a stream or node has of one name: a version, or nothing.
type holding struct {
	version string
	has     bool
}

// except records in ex (returned, made if nil) that h is held of name,
// where the rule says rule: only a difference is kept.
func except(ex map[string]holding, name string, h, rule holding) map[string]holding {
	if h == rule {
		delete(ex, name)
		return ex
	}
	if ex == nil {
		ex = map[string]holding{}
	}
	ex[name] = h
	return ex
}
