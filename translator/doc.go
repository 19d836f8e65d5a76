// Package translator turns Knative Ingress objects, and the Services and
// Secrets they reference, into Envoy v3 resources.
//
// It is pure: no I/O, no clocks, no globals. The controller translates one
// ingress at a time into a Piece (cached per ingress), and a Table assembles
// listeners, route configurations, scopes, clusters and secrets from the
// pieces and says what each Build changed, so a change to one ingress costs
// one translation. Endpoints (EDS) are computed apart from routes by
// LoadAssignment, so endpoint churn never re-translates an ingress.
package translator
