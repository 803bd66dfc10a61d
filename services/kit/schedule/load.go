package schedule

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// ProfileDir is the directory name that marks cluster profiles: a file is a
// cluster profile if and only if its parent directory is named "clusters".
const ProfileDir = "clusters"

// IsProfilePath reports whether LoadPaths treats path as a cluster profile.
func IsProfilePath(path string) bool {
	return filepath.Base(filepath.Dir(filepath.Clean(path))) == ProfileDir
}

// LoadPaths loads schedules and cluster profiles from files and directories.
// Directories are walked recursively for *.yml and *.yaml files, skipping
// hidden ones (names starting with "."); files named explicitly are read
// whatever their extension. A file whose parent directory is named
// "clusters" is a cluster profile, every other file a schedule.
//
// Besides each file's own problems it checks across files: duplicate
// schedule or profile names, and — when at least one profile was loaded —
// schedules naming an unknown cluster profile or not fitting theirs (see
// Schedule.ValidateWith).
//
// It returns the schedules and profiles whose own files have no problems
// (problems found only across files do not drop them), and every problem
// found as a Problems error, sorted by file and position.
func LoadPaths(paths ...string) (schedules []*Schedule, profiles []*Profile, err error) {
	var probs Problems
	var files []string
	seen := map[string]bool{}
	add := func(p string) {
		p = filepath.Clean(p)
		if !seen[p] {
			seen[p] = true
			files = append(files, p)
		}
	}
	for _, root := range paths {
		info, err := os.Stat(root)
		if err != nil {
			probs = append(probs, readProblem(root, err))
			continue
		}
		if !info.IsDir() {
			add(root)
			continue
		}
		err = filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				probs = append(probs, readProblem(p, err))
				return nil
			}
			hidden := strings.HasPrefix(e.Name(), ".") && p != filepath.Clean(root)
			switch {
			case e.IsDir() && hidden:
				return filepath.SkipDir
			case e.IsDir() || hidden:
				return nil
			}
			if ext := filepath.Ext(p); ext == ".yml" || ext == ".yaml" {
				add(p)
			}
			return nil
		})
		if err != nil {
			probs = append(probs, readProblem(root, err))
		}
	}

	// Decode everything, keeping partial results for the cross-file checks.
	type loaded[T any] struct {
		v  T
		ok bool
	}
	var allS []loaded[*Schedule]
	var allP []loaded[*Profile]
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			probs = append(probs, readProblem(file, err))
			continue
		}
		if IsProfilePath(file) {
			p, ps := parseProfile(file, data)
			probs = append(probs, ps...)
			if p != nil {
				allP = append(allP, loaded[*Profile]{p, len(ps) == 0})
			}
			continue
		}
		s, ps := parseSchedule(file, data)
		probs = append(probs, ps...)
		if s != nil {
			allS = append(allS, loaded[*Schedule]{s, len(ps) == 0})
		}
	}

	byName := map[string]loaded[*Profile]{}
	for _, p := range allP {
		if p.v.Name == "" {
			continue
		}
		if prev, dup := byName[p.v.Name]; dup {
			probs = append(probs, problemAt(p.v.File, p.v.pos, "name", "duplicate cluster profile name %q (also %s)", p.v.Name, where(prev.v.File, prev.v.pos, "name")))
			continue
		}
		byName[p.v.Name] = p
	}
	scheduleNames := map[string]*Schedule{}
	for _, s := range allS {
		if s.v.Name != "" {
			if prev, dup := scheduleNames[s.v.Name]; dup {
				probs = append(probs, problemAt(s.v.File, s.v.pos, "name", "duplicate schedule name %q (also %s)", s.v.Name, where(prev.File, prev.pos, "name")))
			} else {
				scheduleNames[s.v.Name] = s.v
			}
		}
		if len(allP) == 0 || s.v.Cluster == "" {
			continue
		}
		p, found := byName[s.v.Cluster]
		switch {
		case !found:
			probs = append(probs, problemAt(s.v.File, s.v.pos, "cluster", "unknown cluster profile %q%s", s.v.Cluster, knownNames(byName)))
		case s.ok && p.ok:
			if err := s.v.ValidateWith(p.v); err != nil {
				probs = append(probs, err.(Problems)...)
			}
		}
	}

	for _, s := range allS {
		if s.ok {
			schedules = append(schedules, s.v)
		}
	}
	for _, p := range allP {
		if p.ok {
			profiles = append(profiles, p.v)
		}
	}
	probs.sort()
	return schedules, profiles, probs.Err()
}

// where renders file:line:col of a field for "also in" messages.
func where(file string, pos map[string]position, field string) string {
	if at, ok := pos[field]; ok {
		return fmt.Sprintf("%s:%d:%d", file, at.line, at.col)
	}
	return file
}

func knownNames[T any](m map[string]T) string {
	if len(m) == 0 {
		return ""
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	return fmt.Sprintf(" (known: %s)", strings.Join(names, ", "))
}

// LoadProfileDir reads every *.yml / *.yaml file directly in dir as a
// cluster profile (whatever the directory is called) and returns them by
// name. Every problem of every file, and duplicate names across files, are
// reported at once as Problems. An empty dir returns an empty map.
func LoadProfileDir(dir string) (map[string]*Profile, error) {
	out := map[string]*Profile{}
	if dir == "" {
		return out, nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, Problems{readProblem(dir, err)}
	}
	var probs Problems
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") || (ext != ".yml" && ext != ".yaml") {
			continue
		}
		p, err := LoadProfile(filepath.Join(dir, e.Name()))
		if err != nil {
			var ps Problems
			if errors.As(err, &ps) {
				probs = append(probs, ps...)
			} else {
				probs = append(probs, Problem{File: filepath.Join(dir, e.Name()), Msg: err.Error()})
			}
			continue
		}
		if prev, dup := out[p.Name]; dup {
			probs = append(probs, problemAt(p.File, p.pos, "name", "duplicate cluster profile name %q (also %s)", p.Name, where(prev.File, prev.pos, "name")))
			continue
		}
		out[p.Name] = p
	}
	return out, probs.Err()
}
