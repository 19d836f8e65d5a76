// Command sluice is the Sluice control plane and its tools.
package main

import (
	"fmt"
	"io"
	"os"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `usage: sluice <command> [flags]

commands:
  controller   run the control plane (watch KIngresses, serve xDS)
  translate    translate a YAML file of KIngresses and the objects they use to Envoy resources
  bootstrap    print an Envoy bootstrap that connects to the control plane
  status       show which Envoys hold what Sluice serves (CSDS), for the fleet or one KIngress
  version      print the version
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "controller":
		err = runController(args[1:], stderr)
	case "translate":
		err = runTranslate(args[1:], stdout, stderr)
	case "bootstrap":
		err = runBootstrap(args[1:], stdout, stderr)
	case "status":
		err = runStatus(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "sluice", version)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "sluice: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "sluice "+args[0]+":", err)
		return 1
	}
	return 0
}
