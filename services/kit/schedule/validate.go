package schedule

import "fmt"

// TaskSize returns the task-level CPU units and memory MiB to register for s
// on profile p. On Fargate profiles it is the explicit cpu/memory when both
// are set (checked against the Fargate table), otherwise the smallest
// Fargate size holding the containers (keeping whichever of cpu/memory is
// set). Elsewhere it is the explicit values as written, 0 meaning unset.
func (s *Schedule) TaskSize(p *Profile) (cpu, mem int, err error) {
	if !p.IsFargate() {
		return s.CPU, s.Memory, nil
	}
	if s.CPU != 0 && s.Memory != 0 {
		if err := ValidFargate(s.CPU, s.Memory); err != nil {
			return 0, 0, err
		}
	}
	return fargateFit(s.CPUSum(), s.MemorySum(), s.CPU, s.Memory)
}

// ValidateWith checks s against the cluster profile it names: that it is
// the right profile, that the task fits a Fargate size when the profile runs
// on Fargate, and that secrets have an execution role to fetch them. The
// error, if any, is a Problems positioned in s's file.
func (s *Schedule) ValidateWith(p *Profile) error {
	var probs Problems
	add := func(field, format string, args ...any) {
		probs = append(probs, problemAt(s.File, s.pos, field, format, args...))
	}
	if s.Cluster != p.Name {
		add("cluster", "is %q but was checked against cluster profile %q", s.Cluster, p.Name)
	}
	if p.IsFargate() {
		if _, _, err := s.TaskSize(p); err != nil {
			field := "containers"
			switch {
			case s.Memory != 0:
				field = "memory"
			case s.CPU != 0:
				field = "cpu"
			}
			add(field, "cluster profile %q runs on Fargate: %v", p.Name, err)
		}
	}
	if p.ExecutionRoleARN == "" {
		for i, c := range s.Containers {
			if len(c.Secrets) > 0 {
				add(fmt.Sprintf("containers[%d].secrets", i), "cluster profile %q has no executionRoleArn, which ECS needs to fetch secrets", p.Name)
			}
		}
	}
	probs.sort()
	return probs.Err()
}
