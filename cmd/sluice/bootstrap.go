package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"sluice.dev/sluice/internal/bootstrap"
)

func runBootstrap(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bootstrap", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o bootstrap.Options
	fs.StringVar(&o.XDSAddress, "xds-address", "127.0.0.1:18000", "host:port of Sluice's xDS server")
	fs.StringVar(&o.NodeID, "node-id", "envoy-0", "Envoy node id (its pod name in a cluster; Envoy's --service-node overrides it)")
	fs.StringVar(&o.NodeCluster, "node-cluster", "sluice-gateway", "Envoy node cluster: the gateway name")
	fs.StringVar(&o.AdminAddress, "admin-address", "127.0.0.1:9901", "host:port of Envoy's admin interface")
	fs.BoolVar(&o.SotW, "sotw", false, "use state-of-the-world ADS instead of delta")
	fs.Uint64Var(&o.MaxConnections, "max-connections", 50000, "downstream connections Envoy holds at most; from 80% of it idle ones are closed sooner (0: no bound; needs --max-heap-bytes)")
	fs.Uint64Var(&o.MaxHeapBytes, "max-heap-bytes", 2684354560, "Envoy's heap bound (the chart: 5/6 of the container's memory limit): from 80% idle connections are shed, from 90% the streams buffering the most are reset; it never refuses requests (0: no bound)")
	fs.StringVar(&o.TLS.Cert, "xds-tls-cert", "", "PEM client certificate Envoy presents to Sluice; with --xds-tls-key and --xds-tls-ca, xDS is mutual TLS")
	fs.StringVar(&o.TLS.Key, "xds-tls-key", "", "PEM key of --xds-tls-cert")
	fs.StringVar(&o.TLS.CA, "xds-tls-ca", "", "PEM CA that signs Sluice's server certificate, whose names must include the xDS address's host")
	fs.StringVar(&o.TLS.SDSDir, "xds-tls-sds-dir", "", "with --xds-tls-*: the directory Envoy finds the SDS files naming the certificates in (written there now), through which it picks up renewed certificates")
	if err := fs.Parse(args); err != nil {
		return err
	}
	b, err := bootstrap.Build(o)
	if err != nil {
		return err
	}
	if o.TLS.SDSDir != "" {
		files, err := bootstrap.SDSFiles(o.TLS)
		if err != nil {
			return err
		}
		for path, data := range files {
			if err := os.WriteFile(path, data, 0o644); err != nil {
				return fmt.Errorf("xds-tls-sds-dir: %w", err)
			}
		}
	}
	y, err := bootstrap.YAML(b)
	if err != nil {
		return err
	}
	_, err = stdout.Write(y)
	return err
}
