package schedule

import (
	"fmt"
	"strconv"
	"strings"
)

// FargateTier is one Fargate task CPU value and the memory values (MiB)
// allowed with it.
type FargateTier struct {
	CPU      int // CPU units (1024 = 1 vCPU)
	MemoryMi []int
}

// FargateSizes is the Fargate task size table, smallest CPU first.
// See https://docs.aws.amazon.com/AmazonECS/latest/developerguide/fargate-tasks-services.html#fargate-tasks-size
var FargateSizes = []FargateTier{
	{CPU: 256, MemoryMi: []int{512, 1024, 2048}},
	{CPU: 512, MemoryMi: memRange(1024, 4096, 1024)},
	{CPU: 1024, MemoryMi: memRange(2048, 8192, 1024)},
	{CPU: 2048, MemoryMi: memRange(4096, 16384, 1024)},
	{CPU: 4096, MemoryMi: memRange(8192, 30720, 1024)},
	{CPU: 8192, MemoryMi: memRange(16384, 61440, 4096)},
	{CPU: 16384, MemoryMi: memRange(32768, 122880, 8192)},
}

func memRange(lo, hi, step int) []int {
	var out []int
	for m := lo; m <= hi; m += step {
		out = append(out, m)
	}
	return out
}

// FargateSize returns the smallest Fargate task size that holds
// containers needing cpuSum CPU units and memSum MiB in total: the smallest
// Fargate CPU at or above cpuSum that allows a memory value at or above
// memSum, and the smallest such memory value for that CPU.
func FargateSize(cpuSum, memSum int) (cpu, mem int, err error) {
	return fargateFit(cpuSum, memSum, 0, 0)
}

// fargateFit is FargateTaskSize with optional fixed CPU and/or memory (0 =
// free), used when a schedule sets one of the task-level values.
func fargateFit(cpuSum, memSum, fixedCPU, fixedMem int) (cpu, mem int, err error) {
	if cpuSum < 0 || memSum < 0 {
		return 0, 0, fmt.Errorf("%w: negative CPU (%d) or memory (%d)", ErrNoFargateSize, cpuSum, memSum)
	}
	largest := FargateSizes[len(FargateSizes)-1]
	largestMem := largest.MemoryMi[len(largest.MemoryMi)-1]
	if cpuSum > largest.CPU {
		return 0, 0, fmt.Errorf("%w: CPU %d units exceeds the largest Fargate size %d CPU / %d MiB", ErrNoFargateSize, cpuSum, largest.CPU, largestMem)
	}
	if memSum > largestMem {
		return 0, 0, fmt.Errorf("%w: memory %d MiB exceeds the largest Fargate size %d CPU / %d MiB", ErrNoFargateSize, memSum, largest.CPU, largestMem)
	}
	if fixedCPU != 0 {
		if err := validFargateCPU(fixedCPU); err != nil {
			return 0, 0, err
		}
	}
	if fixedMem != 0 && fixedMem < memSum {
		return 0, 0, fmt.Errorf("%w: task memory %d MiB is less than the containers' %d MiB", ErrNoFargateSize, fixedMem, memSum)
	}
	if fixedCPU != 0 && fixedCPU < cpuSum {
		return 0, 0, fmt.Errorf("%w: task CPU %d is less than the containers' %d", ErrNoFargateSize, fixedCPU, cpuSum)
	}
	for _, row := range FargateSizes {
		if row.CPU < cpuSum || (fixedCPU != 0 && row.CPU != fixedCPU) {
			continue
		}
		for _, m := range row.MemoryMi {
			if m >= memSum && (fixedMem == 0 || m == fixedMem) {
				return row.CPU, m, nil
			}
		}
	}
	switch {
	case fixedCPU != 0 && fixedMem != 0:
		return 0, 0, ValidFargate(fixedCPU, fixedMem)
	case fixedCPU != 0:
		return 0, 0, fmt.Errorf("%w: memory %d MiB does not fit CPU %d (%s)", ErrNoFargateSize, memSum, fixedCPU, describeMem(fixedCPU))
	default:
		return 0, 0, fmt.Errorf("%w: memory %d MiB is not a Fargate memory size for CPU %d or more", ErrNoFargateSize, fixedMem, max(cpuSum, FargateSizes[0].CPU))
	}
}

// ValidFargate reports whether cpu units and mem MiB are a valid Fargate
// task size, and if not, why.
func ValidFargate(cpu, mem int) error {
	if err := validFargateCPU(cpu); err != nil {
		return err
	}
	for _, row := range FargateSizes {
		if row.CPU != cpu {
			continue
		}
		for _, m := range row.MemoryMi {
			if m == mem {
				return nil
			}
		}
	}
	return fmt.Errorf("%w: memory %d MiB is not valid with CPU %d (%s)", ErrNoFargateSize, mem, cpu, describeMem(cpu))
}

func validFargateCPU(cpu int) error {
	var cpus []string
	for _, row := range FargateSizes {
		if row.CPU == cpu {
			return nil
		}
		cpus = append(cpus, strconv.Itoa(row.CPU))
	}
	return fmt.Errorf("%w: CPU %d is not a Fargate size (%s)", ErrNoFargateSize, cpu, strings.Join(cpus, ", "))
}

// describeMem renders the memory values allowed with cpu, e.g.
// "1024-4096 MiB in steps of 1024".
func describeMem(cpu int) string {
	for _, row := range FargateSizes {
		if row.CPU != cpu {
			continue
		}
		m := row.MemoryMi
		if len(m) > 2 && m[1]-m[0] == m[2]-m[1] {
			return fmt.Sprintf("%d-%d MiB in steps of %d", m[0], m[len(m)-1], m[1]-m[0])
		}
		parts := make([]string, len(m))
		for i, v := range m {
			parts[i] = strconv.Itoa(v)
		}
		return strings.Join(parts, ", ") + " MiB"
	}
	return ""
}
