package schedule

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestFargateSize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		cpuSum, memSum int
		cpu, mem       int
		err            string
	}{
		{cpuSum: 256, memSum: 3000, cpu: 512, mem: 3072},
		{cpuSum: 4096, memSum: 40000, cpu: 8192, mem: 40960},
		{cpuSum: 0, memSum: 0, cpu: 256, mem: 512},
		{cpuSum: 10, memSum: 100, cpu: 256, mem: 512},
		{cpuSum: 256, memSum: 512, cpu: 256, mem: 512},
		{cpuSum: 256, memSum: 513, cpu: 256, mem: 1024},
		{cpuSum: 256, memSum: 2048, cpu: 256, mem: 2048},
		{cpuSum: 256, memSum: 2049, cpu: 512, mem: 3072},
		{cpuSum: 257, memSum: 512, cpu: 512, mem: 1024},
		{cpuSum: 512, memSum: 4096, cpu: 512, mem: 4096},
		{cpuSum: 512, memSum: 4097, cpu: 1024, mem: 5120},
		{cpuSum: 1024, memSum: 1, cpu: 1024, mem: 2048},
		{cpuSum: 1024, memSum: 8192, cpu: 1024, mem: 8192},
		{cpuSum: 1024, memSum: 8193, cpu: 2048, mem: 9216},
		{cpuSum: 2048, memSum: 16384, cpu: 2048, mem: 16384},
		{cpuSum: 2048, memSum: 16385, cpu: 4096, mem: 17408},
		{cpuSum: 4096, memSum: 8192, cpu: 4096, mem: 8192},
		{cpuSum: 4096, memSum: 30720, cpu: 4096, mem: 30720},
		{cpuSum: 4096, memSum: 30721, cpu: 8192, mem: 32768},
		{cpuSum: 8192, memSum: 1000, cpu: 8192, mem: 16384},
		{cpuSum: 8192, memSum: 61440, cpu: 8192, mem: 61440},
		{cpuSum: 8192, memSum: 61441, cpu: 16384, mem: 65536},
		{cpuSum: 16384, memSum: 0, cpu: 16384, mem: 32768},
		{cpuSum: 16384, memSum: 122880, cpu: 16384, mem: 122880},
		{cpuSum: 100, memSum: 122880, cpu: 16384, mem: 122880},
		{cpuSum: 16385, memSum: 1024, err: "no valid Fargate task size: CPU 16385 units exceeds the largest Fargate size 16384 CPU / 122880 MiB"},
		{cpuSum: 256, memSum: 130000, err: "no valid Fargate task size: memory 130000 MiB exceeds the largest Fargate size 16384 CPU / 122880 MiB"},
		{cpuSum: -1, memSum: 10, err: "no valid Fargate task size: negative CPU (-1) or memory (10)"},
	}
	for _, tt := range tests {
		t.Run("", func(t *testing.T) {
			t.Parallel()
			cpu, mem, err := FargateSize(tt.cpuSum, tt.memSum)
			if tt.err != "" {
				require.ErrorIs(t, err, ErrNoFargateSize)
				require.EqualError(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, [2]int{tt.cpu, tt.mem}, [2]int{cpu, mem}, "FargateSize(%d, %d)", tt.cpuSum, tt.memSum)
			require.NoError(t, ValidFargate(cpu, mem))
		})
	}
}

func TestFargateFitFixed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                   string
		cpuSum, memSum, fc, fm int
		cpu, mem               int
		err                    string
	}{
		{name: "fixed cpu picks memory", cpuSum: 256, memSum: 600, fc: 1024, cpu: 1024, mem: 2048},
		{name: "fixed memory picks cpu", cpuSum: 256, memSum: 600, fm: 8192, cpu: 1024, mem: 8192},
		{name: "both fixed and valid", cpuSum: 256, memSum: 600, fc: 512, fm: 2048, cpu: 512, mem: 2048},
		{name: "fixed cpu too small for memory", cpuSum: 256, memSum: 3000, fc: 256, err: "no valid Fargate task size: memory 3000 MiB does not fit CPU 256 (512, 1024, 2048 MiB)"},
		{name: "fixed cpu not in table", cpuSum: 256, memSum: 512, fc: 300, err: "no valid Fargate task size: CPU 300 is not a Fargate size (256, 512, 1024, 2048, 4096, 8192, 16384)"},
		{name: "fixed cpu below containers", cpuSum: 1024, memSum: 512, fc: 512, err: "no valid Fargate task size: task CPU 512 is less than the containers' 1024"},
		{name: "fixed memory below containers", cpuSum: 256, memSum: 4000, fm: 2048, err: "no valid Fargate task size: task memory 2048 MiB is less than the containers' 4000 MiB"},
		{name: "fixed memory not a size", cpuSum: 256, memSum: 512, fm: 1500, err: "no valid Fargate task size: memory 1500 MiB is not a Fargate memory size for CPU 256 or more"},
		{name: "both fixed, invalid pair", cpuSum: 256, memSum: 512, fc: 256, fm: 4096, err: "no valid Fargate task size: memory 4096 MiB is not valid with CPU 256 (512, 1024, 2048 MiB)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cpu, mem, err := fargateFit(tt.cpuSum, tt.memSum, tt.fc, tt.fm)
			if tt.err != "" {
				require.EqualError(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, [2]int{tt.cpu, tt.mem}, [2]int{cpu, mem})
		})
	}
}

func TestValidFargate(t *testing.T) {
	t.Parallel()
	// Every table entry is valid, and nothing between entries is.
	for _, row := range FargateSizes {
		allowed := map[int]bool{}
		for _, m := range row.MemoryMi {
			allowed[m] = true
		}
		for m := 0; m <= 123904; m += 512 {
			err := ValidFargate(row.CPU, m)
			if allowed[m] {
				require.NoError(t, err, "%d/%d", row.CPU, m)
			} else {
				require.ErrorIs(t, err, ErrNoFargateSize, "%d/%d", row.CPU, m)
			}
		}
	}
	require.EqualError(t, ValidFargate(512, 3000), "no valid Fargate task size: memory 3000 MiB is not valid with CPU 512 (1024-4096 MiB in steps of 1024)")
	require.EqualError(t, ValidFargate(8192, 20000), "no valid Fargate task size: memory 20000 MiB is not valid with CPU 8192 (16384-61440 MiB in steps of 4096)")
	require.EqualError(t, ValidFargate(3000, 4096), "no valid Fargate task size: CPU 3000 is not a Fargate size (256, 512, 1024, 2048, 4096, 8192, 16384)")
	// Spot checks against the published table edges.
	for _, ok := range [][2]int{{256, 512}, {256, 2048}, {512, 1024}, {512, 4096}, {1024, 2048}, {1024, 8192}, {2048, 4096}, {2048, 16384}, {4096, 8192}, {4096, 30720}, {8192, 16384}, {8192, 61440}, {16384, 32768}, {16384, 122880}} {
		require.NoError(t, ValidFargate(ok[0], ok[1]))
	}
	for _, bad := range [][2]int{{256, 3072}, {512, 512}, {512, 5120}, {1024, 1024}, {2048, 17408}, {4096, 31744}, {8192, 65536}, {8192, 20480 + 1024}, {16384, 36864}, {16384, 131072}} {
		require.Error(t, ValidFargate(bad[0], bad[1]), "%v", bad)
	}
}
