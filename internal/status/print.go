package status

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"sigs.k8s.io/yaml"
)

// Write prints v (a Fleet or an Ingress) as a table, json or yaml.
func Write(w io.Writer, v any, format string) error {
	switch format {
	case "json", "yaml":
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		if format == "yaml" {
			if b, err = yaml.JSONToYAML(b); err != nil {
				return err
			}
		} else {
			b = append(b, '\n')
		}
		_, err = w.Write(b)
		return err
	case "", "table":
	default:
		return fmt.Errorf("output format %q: want table, json or yaml", format)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	switch v := v.(type) {
	case Fleet:
		writeFleet(tw, v)
	case Ingress:
		writeIngress(tw, v)
	default:
		return fmt.Errorf("cannot print %T", v)
	}
	return tw.Flush()
}

func writeFleet(w io.Writer, f Fleet) {
	head := []string{"ENVOY", "REPLICA", "HEAP"}
	for _, t := range Types {
		head = append(head, t.Short)
	}
	fmt.Fprintln(w, strings.Join(head, "\t"))
	var rejected []string
	for _, e := range f.Envoys {
		row := []string{e.Node, e.Replica, heap(e)}
		for _, t := range e.Types {
			row = append(row, cell(t))
			for _, r := range t.Rejected {
				rejected = append(rejected, fmt.Sprintf("%s\t%s\t%s\t%s", e.Node, t.Type, r.Name, oneLine(r.Error)))
			}
		}
		fmt.Fprintln(w, strings.Join(row, "\t"))
	}
	if len(f.Envoys) == 0 {
		fmt.Fprintln(w, "(no Envoy connected)")
	}
	if len(rejected) > 0 {
		fmt.Fprintln(w, "\nREJECTED BY\tTYPE\tRESOURCE\tENVOY'S ERROR")
		fmt.Fprintln(w, strings.Join(rejected, "\n"))
	}
	writeUnreachable(w, f.Unreachable)
}

// heap is an Envoy's heap pressure, and what its overload manager does
// about it that concerns traffic.
func heap(e Envoy) string {
	s := "-"
	if e.HeapPressure != nil {
		s = fmt.Sprintf("%.0f%%", 100**e.HeapPressure)
	}
	if e.Refusing != "" {
		s += " REFUSING (" + e.Refusing + ")"
	}
	return s
}

// cell is one type on one Envoy: its state, and how many are not synced.
func cell(t TypeSync) string {
	switch t.State {
	case "-":
		return "-"
	case Synced:
		return fmt.Sprintf("SYNCED (%d)", t.Resources)
	}
	return fmt.Sprintf("%s (%d/%d synced)", t.State, t.Synced, t.Resources)
}

func writeIngress(w io.Writer, in Ingress) {
	fmt.Fprintln(w, "INGRESS\tGENERATION\tOBSERVED\tREADY\tREASON")
	fmt.Fprintf(w, "%s\t%d\t%d\t%s\t%s\n", in.Ingress, in.Generation, in.ObservedGeneration, in.Ready, in.Reason)
	if in.Ready != "True" && in.Message != "" {
		fmt.Fprintf(w, "message: %s\n", oneLine(in.Message))
	}
	if in.ObservedGeneration != in.Generation {
		fmt.Fprintf(w, "generation %d is not Ready yet: the status is of generation %d\n", in.Generation, in.ObservedGeneration)
	}
	fmt.Fprintln(w, "\nENVOY\tREPLICA\tSERVING\tRESOURCES")
	for _, e := range in.Envoys {
		var rs []string
		for _, r := range e.Resources {
			s := r.Type + " " + r.Name + " " + r.State
			if r.Error != "" {
				s += ": " + oneLine(r.Error)
			}
			rs = append(rs, s)
		}
		serving := yesNo(e.Serving)
		if e.Refusing != "" {
			serving = "no: refusing (" + e.Refusing + ")"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", e.Node, e.Replica, serving, strings.Join(rs, ", "))
	}
	if len(in.Envoys) == 0 {
		fmt.Fprintln(w, "(no Envoy connected)")
	}
	writeUnreachable(w, in.Unreachable)
}

func writeUnreachable(w io.Writer, us []Unreachable) {
	for _, u := range us {
		fmt.Fprintf(w, "unreachable replica %s: %s\n", u.Replica, oneLine(u.Error))
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
