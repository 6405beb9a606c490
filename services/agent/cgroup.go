package agent

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// cgroups places kernels in cgroups: one per kernel, under a parent of
// this agent's own, in cgroup v2 where its unified hierarchy has the
// memory and pids controllers, else in the v1 hierarchies of memory, pids
// and cpu (cpu optional).
type cgroups struct {
	v2 bool
	// parents: controller → the parent directory of the kernels' cgroups
	// (v2: the single key "").
	parents map[string]string
	enable  string // v2: the parent's cgroup.subtree_control

	parentsMade atomic.Bool // by makeParents
	// What kernels' cgroups have, found in the first one (probe): the
	// swap limit's file, and in v2 cpu.max.
	probeOnce         sync.Once
	swapFile, cpuFile bool
}

// limits are a kernel's cgroup limits; zero is no limit.
type limits struct {
	mem  int64 // bytes
	cpu  int64 // micro-CPUs (slots.Scale per CPU)
	pids int64
}

// cgroupRoot is where the cgroup file systems are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// detectCgroups finds the cgroup hierarchies and makes the parent
// directory name (a path component) under this process's own cgroups.
func detectCgroups(name string) (*cgroups, error) {
	self, err := selfCgroups()
	if err != nil {
		return nil, err
	}
	for _, root := range []string{cgroupRoot, filepath.Join(cgroupRoot, "unified")} {
		data, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
		if err != nil {
			continue
		}
		ctl := strings.Fields(string(data))
		if !contains(ctl, "memory") || !contains(ctl, "pids") {
			continue
		}
		// The agent's own cgroup has a process (the agent): kernels go in
		// a sibling, where controllers may be enabled.
		parent := filepath.Join(root, filepath.Dir(self[""]), name)
		enable := "+memory +pids"
		if contains(ctl, "cpu") {
			enable += " +cpu"
		}
		return &cgroups{v2: true, parents: map[string]string{"": parent}, enable: enable}, nil
	}
	c := &cgroups{parents: map[string]string{}}
	for _, ctl := range []string{"memory", "pids", "cpu"} {
		p, ok := self[ctl]
		if !ok {
			continue
		}
		mnt := filepath.Join(cgroupRoot, ctl)
		if _, err := os.Stat(filepath.Join(mnt, "cgroup.procs")); err != nil {
			continue
		}
		c.parents[ctl] = filepath.Join(mnt, p, name)
	}
	if c.parents["memory"] == "" || c.parents["pids"] == "" {
		return nil, errors.New("neither cgroup v2 with memory and pids nor cgroup v1 memory and pids hierarchies")
	}
	return c, nil
}

// selfCgroups is /proc/self/cgroup: controller → path ("" for v2).
func selfCgroups() (map[string]string, error) {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "" {
			m[""] = parts[2]
			continue
		}
		for _, ctl := range strings.Split(parts[1], ",") {
			m[ctl] = parts[2]
		}
	}
	return m, sc.Err()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// dirs are the kernel's cgroup directories.
func (c *cgroups) dirs(id string) []string {
	var d []string
	for _, p := range c.parents {
		d = append(d, filepath.Join(p, id))
	}
	return d
}

// dir is the kernel's directory of controller ctl.
func (c *cgroups) dir(ctl, id string) string {
	if c.v2 {
		ctl = ""
	}
	p, ok := c.parents[ctl]
	if !ok {
		return ""
	}
	return filepath.Join(p, id)
}

// create makes the kernel's cgroups with their limits. Doing it again is
// harmless. It is on every kernel's start, so it makes no more system calls
// than it must: the parents are made with the first kernel (and again if
// one was removed since), the files a kernel may lack are looked for once,
// and each limit is written in three calls (writeSmall).
func (c *cgroups) create(id string, l limits) error {
	if !c.parentsMade.Load() {
		if err := c.makeParents(); err != nil {
			return err
		}
	}
	for _, d := range c.dirs(id) {
		err := syscall.Mkdir(d, 0o755)
		if errors.Is(err, syscall.ENOENT) {
			if err := c.makeParents(); err != nil {
				return err
			}
			err = syscall.Mkdir(d, 0o755)
		}
		if err != nil && !errors.Is(err, syscall.EEXIST) {
			return fmt.Errorf("create cgroup: %w", &os.PathError{Op: "mkdir", Path: d, Err: err})
		}
	}
	c.probeOnce.Do(func() { c.probe(id) })
	err := c.setLimits(id, l)
	if c.v2 && errors.Is(err, os.ErrNotExist) {
		// A controller was taken off the parents' subtree_control since
		// the first kernel (by hand, or a service manager): on again.
		if err := c.makeParents(); err != nil {
			return err
		}
		err = c.setLimits(id, l)
	}
	return err
}

// setLimits writes kernel id's limits to its cgroups.
func (c *cgroups) setLimits(id string, l limits) error {
	set := func(ctl, file, v string) error {
		d := c.dir(ctl, id)
		if d == "" {
			return nil
		}
		if err := writeSmall(filepath.Join(d, file), v); err != nil {
			return fmt.Errorf("cgroup %s: %w", file, err)
		}
		return nil
	}
	var errs []error
	if c.v2 {
		if l.mem > 0 {
			errs = append(errs, set("", "memory.max", strconv.FormatInt(l.mem, 10)))
			if c.swapFile {
				errs = append(errs, set("", "memory.swap.max", "0"))
			}
		}
		if l.pids > 0 {
			errs = append(errs, set("", "pids.max", strconv.FormatInt(l.pids, 10)))
		}
		if l.cpu > 0 && c.cpuFile {
			errs = append(errs, set("", "cpu.max", strconv.FormatInt(max(l.cpu/10, 1000), 10)+" 100000"))
		}
		return errors.Join(errs...)
	}
	if l.mem > 0 {
		errs = append(errs, set("memory", "memory.limit_in_bytes", strconv.FormatInt(l.mem, 10)))
		if c.swapFile {
			errs = append(errs, set("memory", "memory.memsw.limit_in_bytes", strconv.FormatInt(l.mem, 10)))
		}
	}
	if l.pids > 0 {
		errs = append(errs, set("pids", "pids.max", strconv.FormatInt(l.pids, 10)))
	}
	if l.cpu > 0 {
		// cpu.cfs_quota_us per period: cpu × 100000µs. A new cgroup's
		// cpu.cfs_period_us is the kernel's default, 100000 (100 ms),
		// whatever its parent's.
		errs = append(errs, set("cpu", "cpu.cfs_quota_us", strconv.FormatInt(max(l.cpu/10, 1000), 10)))
	}
	return errors.Join(errs...)
}

// makeParents makes the parents of the kernels' cgroups, and in v2 enables
// the controllers in theirs.
func (c *cgroups) makeParents() error {
	for _, p := range c.parents {
		if err := os.MkdirAll(p, 0o755); err != nil {
			return fmt.Errorf("create cgroup parent: %w", err)
		}
		if c.v2 {
			if err := writeSmall(filepath.Join(p, "cgroup.subtree_control"), c.enable); err != nil {
				return fmt.Errorf("cgroup v2 enable controllers: %w", err)
			}
		}
	}
	c.parentsMade.Store(true)
	return nil
}

// probe looks in kernel id's cgroups, just made, for the files a kernel
// (and so every kernel) may lack: the swap limit (swap accounting off) and,
// in v2, the cpu controller's.
func (c *cgroups) probe(id string) {
	exists := func(ctl, file string) bool {
		_, err := os.Stat(filepath.Join(c.dir(ctl, id), file))
		return err == nil
	}
	if c.v2 {
		c.swapFile, c.cpuFile = exists("", "memory.swap.max"), exists("", "cpu.max")
		return
	}
	c.swapFile = exists("memory", "memory.memsw.limit_in_bytes")
}

// joinFiles are the files a sandbox helper writes "0" to, to join the
// kernel's cgroups. In v1 they are the tasks files, which move the calling
// thread alone: the helper's thread that then forks the execution (which
// inherits its cgroups). Moving one's own thread skips the kernel's global
// cgroup_threadgroup_rwsem, whose write lock waits for an RCU grace period
// (5 to 15 ms measured, per execution) where cgroup.procs moves the whole
// process. v2 has no such file for a domain cgroup: cgroup.procs.
func (c *cgroups) joinFiles(id string) []string {
	file := "tasks"
	if c.v2 {
		file = "cgroup.procs"
	}
	var fs []string
	for _, d := range c.dirs(id) {
		fs = append(fs, filepath.Join(d, file))
	}
	return fs
}

// pids lists the processes in the kernel's cgroup.
func (c *cgroups) pids(id string) ([]int, error) {
	d := c.dir("pids", id)
	data, err := readSmall(filepath.Join(d, "cgroup.procs"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// kill kills every process of the kernel's cgroup, also those that called
// setsid, and waits until it is empty.
func (c *cgroups) kill(id string) error {
	if c.v2 {
		// cgroup.kill (Linux 5.14) kills atomically.
		_ = writeSmall(filepath.Join(c.dir("", id), "cgroup.kill"), "1")
	}
	deadline := time.Now().Add(10 * time.Second)
	// A process that just ended (a sandbox helper, tearing its namespaces
	// down) leaves within a millisecond or two: poll fast, then slower.
	pause := 200 * time.Microsecond
	for {
		pids, err := c.pids(id)
		if err != nil {
			return fmt.Errorf("list kernel processes: %w", err)
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kernel cgroup %s still has %d processes", id, len(pids))
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(pause)
		pause = min(2*pause, 5*time.Millisecond)
	}
}

// remove kills the kernel's processes and removes its cgroups.
func (c *cgroups) remove(id string) error {
	if err := c.kill(id); err != nil {
		return err
	}
	var errs []error
	for _, d := range c.dirs(id) {
		var err error
		pause := 200 * time.Microsecond
		for deadline := time.Now().Add(time.Second); ; {
			// An exiting process may hold the cgroup a moment longer.
			if err = syscall.Rmdir(d); err == nil || errors.Is(err, syscall.ENOENT) {
				err = nil
				break
			}
			if time.Now().After(deadline) {
				break
			}
			time.Sleep(pause)
			pause = min(2*pause, 5*time.Millisecond)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// list is the kernel ids that have a cgroup.
func (c *cgroups) list() ([]string, error) {
	seen := map[string]bool{}
	var ids []string
	for _, p := range c.parents {
		ents, err := os.ReadDir(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			if e.IsDir() && !seen[e.Name()] {
				seen[e.Name()] = true
				ids = append(ids, e.Name())
			}
		}
	}
	return ids, nil
}

// counters are the kernel's limit hits so far: OOM kills and refused forks.
func (c *cgroups) counters(id string) (oomKills, pidsMax int64) {
	if c.v2 {
		oomKills = keyed(filepath.Join(c.dir("", id), "memory.events"), "oom_kill")
	} else {
		oomKills = keyed(filepath.Join(c.dir("memory", id), "memory.oom_control"), "oom_kill")
	}
	pidsMax = keyed(filepath.Join(c.dir("pids", id), "pids.events"), "max")
	return oomKills, pidsMax
}

// keyed reads the value of key in a flat-keyed cgroup file; 0 if absent.
func keyed(file, key string) int64 {
	data, err := readSmall(file)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == key {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}
