package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of /proc/PID/stat's CPU times (USER_HZ, 100 on
// Linux).
const clockTick = 10 * time.Millisecond

// cpuUse is the CPU time used so far by the processes a measurement
// involves.
type cpuUse struct {
	// Minigate is the minigate process (zero when it runs in-process).
	Minigate time.Duration `json:"minigate"`
	// Postgres is every postgres process (the server and its backends).
	Postgres time.Duration `json:"postgres"`
	// Bench is this process: vegeta, the simulator, the event receiver,
	// and the ceiling or SDK loops.
	Bench time.Duration `json:"bench"`
	// Peer is the hand-written peer process, when one runs.
	Peer time.Duration `json:"peer"`
}

func (c cpuUse) sub(o cpuUse) cpuUse {
	return cpuUse{Minigate: c.Minigate - o.Minigate, Postgres: c.Postgres - o.Postgres, Bench: c.Bench - o.Bench, Peer: c.Peer - o.Peer}
}

func (c cpuUse) add(o cpuUse) cpuUse {
	return cpuUse{Minigate: c.Minigate + o.Minigate, Postgres: c.Postgres + o.Postgres, Bench: c.Bench + o.Bench, Peer: c.Peer + o.Peer}
}

// per divides every figure by n (CPU per request).
func (c cpuUse) per(n uint64) cpuUse {
	if n == 0 {
		return cpuUse{}
	}
	d := time.Duration(n)
	return cpuUse{Minigate: c.Minigate / d, Postgres: c.Postgres / d, Bench: c.Bench / d, Peer: c.Peer / d}
}

// sampleCPU reads the CPU time of minigate (mgPid), the peer (peerPid, 0
// for none), this process and all postgres processes. Postgres backends
// that exit between two samples take their time with them; the pools keep
// theirs open, so this matters little.
func sampleCPU(mgPid, peerPid int) cpuUse {
	self := os.Getpid()
	u := cpuUse{Bench: procCPU(self)}
	if mgPid != self {
		u.Minigate = procCPU(mgPid)
	}
	if peerPid != 0 {
		u.Peer = procCPU(peerPid)
	}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range stats {
		raw, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if comm, t, ok := parseStat(raw); ok && comm == "postgres" {
			u.Postgres += t
		}
	}
	return u
}

// procCPU is pid's user+system CPU time, or 0.
func procCPU(pid int) time.Duration {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	_, t, _ := parseStat(raw)
	return t
}

// parseStat reads the command name and utime+stime from a /proc/PID/stat
// line: "pid (comm) state ppid … utime stime …" (fields 14 and 15; comm
// may contain spaces and parentheses, so fields count from its last ')').
func parseStat(raw []byte) (string, time.Duration, bool) {
	s := string(raw)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return "", 0, false
	}
	f := strings.Fields(s[end+1:])
	// f[0] is field 3 (state): utime is field 14, stime field 15.
	if len(f) < 13 {
		return "", 0, false
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return "", 0, false
	}
	return s[open+1 : end], time.Duration(ut+st) * clockTick, true
}
