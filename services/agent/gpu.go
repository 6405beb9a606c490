package agent

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/bai-sh/bai/pkg/slots"
)

// GPU is one NVIDIA device as nvidia-smi reports it.
type GPU struct {
	Index int
	// Device is its device file, hidden from the sandboxed kernels it is
	// not given to; ParseGPUs sets /dev/nvidia<Index> (the index is the
	// minor number on the usual one-driver host).
	Device string
	UUID   string
	Name   string
	MemMiB int64
}

// nvidiaSMIQuery is the nvidia-smi query DetectGPUs runs and ParseGPUs reads.
var nvidiaSMIQuery = []string{"--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"}

// DetectGPUs runs nvidia-smi; no nvidia-smi on PATH is no GPUs, not an error.
func DetectGPUs(ctx context.Context) ([]GPU, error) {
	bin, err := exec.LookPath("nvidia-smi")
	if err != nil {
		return nil, nil
	}
	out, err := exec.CommandContext(ctx, bin, nvidiaSMIQuery...).Output()
	if err != nil {
		return nil, fmt.Errorf("nvidia-smi: %w", err)
	}
	return ParseGPUs(out)
}

// ParseGPUs reads the output of nvidia-smi --query-gpu=index,uuid,name,
// memory.total --format=csv,noheader,nounits.
func ParseGPUs(out []byte) ([]GPU, error) {
	r := csv.NewReader(strings.NewReader(string(out)))
	r.TrimLeadingSpace = true
	r.FieldsPerRecord = 4
	recs, err := r.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("nvidia-smi output: %w", err)
	}
	gpus := make([]GPU, 0, len(recs))
	for _, rec := range recs {
		idx, err := strconv.Atoi(strings.TrimSpace(rec[0]))
		if err != nil {
			return nil, fmt.Errorf("nvidia-smi output: index %q", rec[0])
		}
		uuid := strings.TrimSpace(rec[1])
		if !strings.HasPrefix(uuid, "GPU-") {
			return nil, fmt.Errorf("nvidia-smi output: uuid %q", rec[1])
		}
		mem, err := strconv.ParseInt(strings.TrimSpace(rec[3]), 10, 64)
		if err != nil {
			mem = 0 // "[N/A]" on some boards
		}
		gpus = append(gpus, GPU{Index: idx, Device: "/dev/nvidia" + strconv.Itoa(idx), UUID: uuid, Name: strings.TrimSpace(rec[2]), MemMiB: mem})
	}
	sort.Slice(gpus, func(i, j int) bool { return gpus[i].Index < gpus[j].Index })
	return gpus, nil
}

// GPUAllocator gives kernels specific devices: cuda.device=n takes n whole
// free devices; cuda.shares=q takes q shares of one device (SharesPerDevice
// shares make a device), or whole devices when q is more than one device.
// A device is never given more than its shares.
type GPUAllocator struct {
	gpus   []GPU
	shares slots.Quantity // per device

	mu    sync.Mutex
	used  []slots.Quantity                  // per device
	given map[string]map[int]slots.Quantity // kernel id → device → shares
}

// NewGPUAllocator allocates gpus with sharesPerDevice shares each
// (default 1).
func NewGPUAllocator(gpus []GPU, sharesPerDevice float64) *GPUAllocator {
	if sharesPerDevice <= 0 {
		sharesPerDevice = 1
	}
	return &GPUAllocator{
		gpus: gpus, shares: slots.Quantity(sharesPerDevice * slots.Scale),
		used: make([]slots.Quantity, len(gpus)), given: map[string]map[int]slots.Quantity{},
	}
}

// Capacity is what the agent advertises: cuda.device (the count) and
// cuda.shares (count × shares per device); none without GPUs.
func (a *GPUAllocator) Capacity() map[string]string {
	if a == nil || len(a.gpus) == 0 {
		return nil
	}
	n := slots.Quantity(len(a.gpus))
	return map[string]string{
		"cuda.device": slots.FormatValue("cuda.device", n*slots.Scale),
		"cuda.shares": slots.FormatValue("cuda.shares", n*a.shares),
	}
}

// ErrGPU: the kernel's GPU slots cannot be given from the free devices.
var ErrGPU = errors.New("not enough free GPU")

// Allocate gives kernel id its devices for its slots and returns their
// UUIDs; doing it again for the same kernel returns the same devices.
func (a *GPUAllocator) Allocate(id string, set slots.Set) ([]string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if g, ok := a.given[id]; ok {
		return a.uuids(g), nil
	}
	g := map[int]slots.Quantity{}
	whole := set["cuda.device"] / slots.Scale
	if set["cuda.device"]%slots.Scale != 0 {
		return nil, fmt.Errorf("%w: cuda.device must be whole, got %s", ErrGPU, slots.FormatValue("cuda.device", set["cuda.device"]))
	}
	q := set["cuda.shares"]
	if q > a.shares {
		// More than a device: whole devices.
		whole += (q + a.shares - 1) / a.shares
		q = 0
	}
	for i := range a.gpus {
		if whole == 0 {
			break
		}
		if a.used[i] == 0 {
			g[i] = a.shares
			whole--
		}
	}
	if whole > 0 {
		return nil, fmt.Errorf("%w: %d more whole devices wanted", ErrGPU, whole)
	}
	if q > 0 {
		// The fullest device it fits on: pack, leave whole devices free.
		best := -1
		for i := range a.gpus {
			if _, taken := g[i]; taken || a.used[i]+q > a.shares {
				continue
			}
			if best < 0 || a.used[i] > a.used[best] {
				best = i
			}
		}
		if best < 0 {
			return nil, fmt.Errorf("%w: no device has %s shares free", ErrGPU, slots.FormatValue("cuda.shares", q))
		}
		g[best] = q
	}
	for i, s := range g {
		a.used[i] += s
	}
	if len(g) > 0 {
		a.given[id] = g
	}
	return a.uuids(g), nil
}

func (a *GPUAllocator) uuids(g map[int]slots.Quantity) []string {
	idx := make([]int, 0, len(g))
	for i := range g {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	u := make([]string, len(idx))
	for j, i := range idx {
		u[j] = a.gpus[i].UUID
	}
	return u
}

// Visible is the CUDA_VISIBLE_DEVICES of a kernel: its devices' UUIDs, or
// "" (no device) for a kernel without GPU slots; ok is false without GPUs
// on the host.
func (a *GPUAllocator) Visible(id string) (string, bool) {
	if a == nil || len(a.gpus) == 0 {
		return "", false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return strings.Join(a.uuids(a.given[id]), ","), true
}

// Hidden lists the device files of the GPUs not given to kernel id: all
// of them for a kernel without GPU slots.
func (a *GPUAllocator) Hidden(id string) []string {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for i, g := range a.gpus {
		if _, mine := a.given[id][i]; !mine && g.Device != "" {
			out = append(out, g.Device)
		}
	}
	return out
}

// Release gives the kernel's devices back.
func (a *GPUAllocator) Release(id string) {
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for i, s := range a.given[id] {
		a.used[i] -= s
	}
	delete(a.given, id)
}
