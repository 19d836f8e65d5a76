package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"sluice.dev/sluice/translator"
)

func runTranslate(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("translate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "", "multi-document YAML of KIngress, Service, EndpointSlice, Secret and config-sluice ConfigMap objects (- for stdin)")
	format := fs.String("o", "yaml", "output format: yaml or json (protojson, Envoy's field names)")
	strict := fs.Bool("strict", true, "exit non-zero when an ingress is rejected")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *file == "" {
		return errors.New("-f FILE is required")
	}
	if *format != "yaml" && *format != "json" {
		return fmt.Errorf("-o: %q is not yaml or json", *format)
	}
	var data []byte
	var err error
	if *file == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(*file)
	}
	if err != nil {
		return err
	}
	in, err := translator.ParseInput(data)
	if err != nil {
		return fmt.Errorf("%s: %v", *file, err)
	}
	res, err := translator.TranslateInput(in)
	if err != nil {
		return fmt.Errorf("%s: %v", *file, err)
	}
	out, err := translator.Render(res, *format)
	if err != nil {
		return err
	}
	if _, err := stdout.Write(out); err != nil {
		return err
	}
	var rejected []string
	for _, r := range res.Ingresses {
		if !r.Ready {
			rejected = append(rejected, fmt.Sprintf("%s: ingress %s rejected: %s: %s", *file, r.Name, r.Reason, r.Message))
		}
	}
	for _, r := range rejected {
		fmt.Fprintln(stderr, r)
	}
	if *strict && len(rejected) > 0 {
		return fmt.Errorf("%d of %d ingresses rejected", len(rejected), len(res.Ingresses))
	}
	return nil
}
