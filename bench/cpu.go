package main

import (
	"os"
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
	// Bench is this process: vegeta, the simulator, the event receiver,
	// and the ceiling or SDK loops.
	Bench time.Duration `json:"bench"`
	// Peer is the hand-written peer process, when one runs.
	Peer time.Duration `json:"peer"`
	// Rest is every other busy CPU second of the machine: Postgres (its
	// backends come and go with the pools' connections, so it is counted
	// as what remains of the machine's total) and whatever else runs.
	Rest time.Duration `json:"rest"`
}

func (c cpuUse) sub(o cpuUse) cpuUse {
	return cpuUse{Minigate: c.Minigate - o.Minigate, Bench: c.Bench - o.Bench, Peer: c.Peer - o.Peer, Rest: c.Rest - o.Rest}
}

func (c cpuUse) add(o cpuUse) cpuUse {
	return cpuUse{Minigate: c.Minigate + o.Minigate, Bench: c.Bench + o.Bench, Peer: c.Peer + o.Peer, Rest: c.Rest + o.Rest}
}

// per divides every figure by n (CPU per request).
func (c cpuUse) per(n uint64) cpuUse {
	if n == 0 {
		return cpuUse{}
	}
	d := time.Duration(n)
	return cpuUse{Minigate: c.Minigate / d, Bench: c.Bench / d, Peer: c.Peer / d, Rest: c.Rest / d}
}

// sampleCPU reads the CPU time of minigate (mgPid), the peer (peerPid, 0
// for none) and this process, and the machine's busy time (/proc/stat);
// Rest is the machine's busy time less those three.
func sampleCPU(mgPid, peerPid int) cpuUse {
	self := os.Getpid()
	u := cpuUse{Bench: procCPU(self)}
	if mgPid != self {
		u.Minigate = procCPU(mgPid)
	}
	if peerPid != 0 {
		u.Peer = procCPU(peerPid)
	}
	if raw, err := os.ReadFile("/proc/stat"); err == nil {
		u.Rest = machineBusy(raw) - u.Minigate - u.Bench - u.Peer
	}
	return u
}

// machineBusy is the busy time of all CPUs from /proc/stat's "cpu" line:
// user, nice, system, irq, softirq and steal (not idle or iowait).
func machineBusy(raw []byte) time.Duration {
	line, _, _ := strings.Cut(string(raw), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0
		}
		busy += v
	}
	return time.Duration(busy) * clockTick
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
