package deploytest

import (
	"bytes"
	"os"
	"path"
	"path/filepath"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// TestEcspressoConfigs: every service directory has an ecspresso.yml naming
// its cluster, service and the two definition files next to it.
func TestEcspressoConfigs(t *testing.T) {
	t.Parallel()
	_, serviceDefs := ecsFiles(t)
	for _, sdRel := range serviceDefs {
		dir := path.Dir(sdRel)
		rel := path.Join(dir, "ecspresso.yml")
		data := renderFile(t, rel)
		var cfg struct {
			Region            string `yaml:"region"`
			Cluster           string `yaml:"cluster"`
			Service           string `yaml:"service"`
			ServiceDefinition string `yaml:"service_definition"`
			TaskDefinition    string `yaml:"task_definition"`
			Timeout           string `yaml:"timeout"`
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		require.NoError(t, dec.Decode(&cfg), rel)
		sd := loadServiceDef(t, sdRel)
		require.Equal(t, testEnv["AWS_REGION"], cfg.Region, rel)
		require.Equal(t, aws.ToString(sd.Cluster), cfg.Cluster, rel)
		require.Equal(t, aws.ToString(sd.ServiceName), cfg.Service, rel)
		for _, f := range []string{cfg.ServiceDefinition, cfg.TaskDefinition} {
			_, err := os.Stat(filepath.Join(repoRoot(t), dir, f))
			require.NoError(t, err, rel)
		}
	}
}
