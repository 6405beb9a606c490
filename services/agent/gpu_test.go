package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/bai-sh/bai/internal/natstest"
	"github.com/bai-sh/bai/pkg/events"
	"github.com/bai-sh/bai/pkg/events/streams"
	"github.com/bai-sh/bai/pkg/slots"
	"github.com/bai-sh/bai/services/agent"
)

func readGPUs(t *testing.T, name string) ([]agent.GPU, error) {
	t.Helper()
	out, err := os.ReadFile(filepath.Join("testdata", "nvidia-smi", name))
	if err != nil {
		t.Fatal(err)
	}
	return agent.ParseGPUs(out)
}

// TestParseGPUs reads recorded nvidia-smi --query-gpu output.
func TestParseGPUs(t *testing.T) {
	g, err := readGPUs(t, "h100x1.csv")
	if err != nil {
		t.Fatal(err)
	}
	want := []agent.GPU{{Index: 0, Device: "/dev/nvidia0", UUID: "GPU-8b7e3a52-1c4d-6f09-2e1b-7a3c5d9f0e14", Name: "NVIDIA H100 80GB HBM3", MemMiB: 81559}}
	if !reflect.DeepEqual(g, want) {
		t.Errorf("h100: %+v", g)
	}
	g, err = readGPUs(t, "a100x8.csv")
	if err != nil || len(g) != 8 || g[7].Index != 7 || g[7].Device != "/dev/nvidia7" || g[3].Name != "NVIDIA A100-SXM4-40GB" || g[3].MemMiB != 40960 {
		t.Errorf("a100x8: %+v %v", g, err)
	}
	g, err = readGPUs(t, "mixed-na.csv")
	if err != nil || len(g) != 2 || g[0].Name != "NVIDIA GeForce RTX 3090" || g[0].MemMiB != 0 || g[1].Name != "Tesla T4" {
		t.Errorf("mixed, sorted by index, [N/A] memory: %+v %v", g, err)
	}
	if _, err := readGPUs(t, "bad.csv"); err == nil {
		t.Error("no error for an nvidia-smi message")
	}
	if g, err := agent.ParseGPUs(nil); err != nil || len(g) != 0 {
		t.Errorf("empty output: %v %v", g, err)
	}
}

func set(t *testing.T, kv ...string) slots.Set {
	t.Helper()
	s, err := slots.ParseList(kv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestGPUAllocator: whole devices, fractional shares packed on one device,
// never over-committed, released on destroy.
func TestGPUAllocator(t *testing.T) {
	g, err := readGPUs(t, "a100x8.csv")
	if err != nil {
		t.Fatal(err)
	}
	a := agent.NewGPUAllocator(g[:2], 2) // 2 devices, 2 shares each
	if c := a.Capacity(); c["cuda.device"] != "2" || c["cuda.shares"] != "4" {
		t.Errorf("capacity %v", c)
	}
	must := func(id string, s slots.Set) []string {
		t.Helper()
		d, err := a.Allocate(id, s)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		return d
	}
	d0, d1 := g[0].UUID, g[1].UUID
	// Three half-device kernels: two pack on one device, the third on the other.
	if d := must("k1", set(t, "cuda.shares=1")); !reflect.DeepEqual(d, []string{d0}) {
		t.Errorf("k1 %v", d)
	}
	if d := must("k2", set(t, "cuda.shares=1")); !reflect.DeepEqual(d, []string{d0}) {
		t.Errorf("k2 packs on %v, want %s", d, d0)
	}
	if d := must("k1", set(t, "cuda.shares=1")); !reflect.DeepEqual(d, []string{d0}) {
		t.Errorf("k1 again %v", d)
	}
	if d := must("k3", set(t, "cuda.shares=0.5")); !reflect.DeepEqual(d, []string{d1}) {
		t.Errorf("k3 %v", d)
	}
	// No whole device is free: refused, nothing changes.
	if _, err := a.Allocate("k4", set(t, "cuda.device=1")); !errors.Is(err, agent.ErrGPU) {
		t.Errorf("whole device while both used: %v", err)
	}
	if _, err := a.Allocate("k5", set(t, "cuda.shares=1.6")); !errors.Is(err, agent.ErrGPU) {
		t.Errorf("1.6 shares with 1.5 free on one device: %v", err)
	}
	if d := must("k6", set(t, "cuda.shares=1.5")); !reflect.DeepEqual(d, []string{d1}) {
		t.Errorf("k6 %v", d)
	}
	if v, ok := a.Visible("k6"); !ok || v != d1 {
		t.Errorf("visible %q %v", v, ok)
	}
	if v, ok := a.Visible("no-gpu"); !ok || v != "" {
		t.Errorf("a kernel without GPU slots sees %q %v, want none", v, ok)
	}
	a.Release("k1")
	a.Release("k2")
	if d := must("k7", set(t, "cuda.device=1")); !reflect.DeepEqual(d, []string{d0}) {
		t.Errorf("k7 %v", d)
	}
	if _, err := a.Allocate("k8", set(t, "cuda.device=0.5")); err == nil || !strings.Contains(err.Error(), "whole") {
		t.Errorf("half a device: %v", err)
	}
	// More than a device in shares takes whole devices.
	b := agent.NewGPUAllocator(g, 1)
	if d := must2(t, b, "big", set(t, "cuda.shares=2.5")); len(d) != 3 {
		t.Errorf("2.5 shares: %v, want 3 whole devices", d)
	}
	var none *agent.GPUAllocator
	if v, ok := none.Visible("k"); ok || v != "" {
		t.Errorf("no GPUs: %q %v", v, ok)
	}
}

func must2(t *testing.T, a *agent.GPUAllocator, id string, s slots.Set) []string {
	t.Helper()
	d, err := a.Allocate(id, s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestAgentAdvertisesGPUs: detected devices add cuda.device and cuda.shares
// to the detected capacity.
func TestAgentAdvertisesGPUs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g, err := readGPUs(t, "a100x8.csv")
	if err != nil {
		t.Fatal(err)
	}
	a := e.start(agent.Config{DataDir: t.TempDir(), ID: "agent-gpu", GPUs: g[:4], CUDASharesPerDevice: 4})
	info := e.agentInfo(a.ID())
	if info.Capacity["cuda.device"] != "4" || info.Capacity["cuda.shares"] != "16" || info.Capacity["cpu"] == "" {
		t.Errorf("capacity %v", info.Capacity)
	}
}

// agentInfo is the agent's stored heartbeat.
func (e *env) agentInfo(id string) events.AgentInfo {
	e.t.Helper()
	kv, err := e.js.KeyValue(context.Background(), streams.Agents)
	if err != nil {
		e.t.Fatal(err)
	}
	var info events.AgentInfo
	natstest.CheckFor(e.t, wait, step, func() error {
		ent, err := kv.Get(context.Background(), id)
		if err != nil {
			return err
		}
		return json.Unmarshal(ent.Value(), &info)
	})
	return info
}

// TestProcessKernelGPUEnv: a kernel with a GPU slot sees its device, one
// without sees none (CUDA_VISIBLE_DEVICES).
func TestProcessKernelGPUEnv(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g, err := readGPUs(t, "a100x8.csv")
	if err != nil {
		t.Fatal(err)
	}
	a := e.start(agent.Config{DataDir: t.TempDir(), ID: "agent-gpu", GPUs: g[:2]})
	withGPU, without := spec("gpu"), spec("cpu-only")
	withGPU.Slots = map[string]string{"cpu": "1", "mem": "1g", "cuda.device": "1"}
	withGPU.Run = &events.RunSpec{ID: "r", Exec: `echo "[$CUDA_VISIBLE_DEVICES]"`}
	without.Run = &events.RunSpec{ID: "r", Exec: `echo "[${CUDA_VISIBLE_DEVICES-unset}]"`}
	e.schedule(a, withGPU)
	e.schedule(a, without)
	if o := e.waitExit(withGPU.ID, "r"); string(o.stdout) != "["+g[0].UUID+"]\n" {
		t.Errorf("with a GPU: %q %q", o.stdout, o.stderr)
	}
	if o := e.waitExit(without.ID, "r"); string(o.stdout) != "[]\n" {
		t.Errorf("without a GPU: %q %q", o.stdout, o.stderr)
	}
}

// TestGPURefused: a kernel asking more GPU than is free fails to start
// with a reason, and takes nothing.
func TestGPURefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g, err := readGPUs(t, "a100x8.csv")
	if err != nil {
		t.Fatal(err)
	}
	a := e.start(agent.Config{DataDir: t.TempDir(), ID: "agent-gpu", GPUs: g[:1]})
	big := spec("too-big")
	big.Slots = map[string]string{"cpu": "1", "mem": "1g", "cuda.device": "2"}
	e.schedule(a, big)
	evs := e.waitEvent(big.ID, events.EventTerminated)
	if f := find(evs, events.EventError); f == nil || f.Reason != events.ReasonFailedToStart || !strings.Contains(f.Message, "GPU") {
		t.Errorf("refused kernel: %v %+v", names(evs), f)
	}
	ok := spec("fits")
	ok.Slots = map[string]string{"cpu": "1", "mem": "1g", "cuda.device": "1"}
	ok.Run = &events.RunSpec{ID: "r", Exec: `echo "$CUDA_VISIBLE_DEVICES"`}
	e.schedule(a, ok)
	if o := e.waitExit(ok.ID, "r"); string(o.stdout) != g[0].UUID+"\n" {
		t.Errorf("the device after a refusal: %q", o.stdout)
	}
}

// TestSandboxHidesOtherGPUs: a sandboxed kernel opens only the device
// files of its own GPUs: the others read as /dev/null, also for a kernel
// without a GPU slot (stand-in device files, readable by the kernels).
func TestSandboxHidesOtherGPUs(t *testing.T) {
	needSandbox(t)
	t.Parallel()
	g, err := readGPUs(t, "a100x8.csv")
	if err != nil {
		t.Fatal(err)
	}
	g = g[:2]
	// Where device files are (kernels have /tmp, /var/tmp and /dev/shm
	// of their own).
	devs, err := os.MkdirTemp("/dev", "bai-gpu-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(devs) })
	if err := os.Chmod(devs, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range g {
		g[i].Device = filepath.Join(devs, fmt.Sprintf("nvidia%d", i))
		if err := os.WriteFile(g[i].Device, []byte(fmt.Sprintf("gpu%d", i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	e := newEnv(t)
	a := e.start(agent.Config{DataDir: t.TempDir(), ID: "agent-gpu-hide", GPUs: g})
	read := fmt.Sprintf(`echo "[$(cat %s)] [$(cat %s)]"`, g[0].Device, g[1].Device)
	withGPU, without := spec("gpu"), spec("cpu-only")
	withGPU.Slots = map[string]string{"cpu": "1", "mem": "1g", "cuda.device": "1"}
	withGPU.Run = &events.RunSpec{ID: "r", Exec: read}
	without.Run = &events.RunSpec{ID: "r", Exec: read}
	e.schedule(a, withGPU)
	if o := e.waitExit(withGPU.ID, "r"); string(o.stdout) != "[gpu0] []\n" {
		t.Errorf("with the first GPU: %q %q", o.stdout, o.stderr)
	}
	e.schedule(a, without)
	if o := e.waitExit(without.ID, "r"); string(o.stdout) != "[] []\n" {
		t.Errorf("without a GPU: %q %q", o.stdout, o.stderr)
	}
}
