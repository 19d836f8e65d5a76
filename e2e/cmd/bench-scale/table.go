package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// tableRow is one row of a table of runs: its label, then the cells each
// run gives it (as many as the run has columns).
type tableRow[R any] struct {
	label string
	cells func(R) []string
}

// one is a row with one cell per run.
func one[R any](label string, f func(R) string) tableRow[R] {
	return tableRow[R]{label, func(r R) []string { return []string{f(r)} }}
}

// printTable prints rows as a Markdown table under head (the label
// column's title first, then one per column).
func printTable[R any](head []string, runs []R, rows []tableRow[R]) {
	fmt.Printf("\n| %s |\n|---|%s\n", strings.Join(head, " | "), strings.Repeat("---:|", len(head)-1))
	for _, row := range rows {
		fmt.Printf("| %s |", row.label)
		for _, r := range runs {
			for _, c := range row.cells(r) {
				fmt.Printf(" %s |", c)
			}
		}
		fmt.Println()
	}
}

// saveResults writes v as JSON to e2e/results/<kind>-<params>-<time>.json
// and says where.
func saveResults(root, kind string, v any) error {
	out := filepath.Join(root, "e2e", "results", fmt.Sprintf("%s-%s.json", kind, time.Now().UTC().Format("20060102-150405")))
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(out, b, 0o644); err != nil {
		return err
	}
	fmt.Println("results in", out)
	return nil
}

// missing collects the names of readings that could not be taken (-1).
type missing []string

func (m *missing) check(name string, vs ...float64) {
	for _, v := range vs {
		if v < 0 {
			*m = append(*m, name)
			return
		}
	}
}

func floats(vs ...int64) []float64 {
	f := make([]float64, len(vs))
	for i, v := range vs {
		f[i] = float64(v)
	}
	return f
}
