package main

// gaps lists, by package and test, the tests of Serving's suite that do
// not pass on this stack, each with the capability of a real cluster that
// the stack lacks. Everything else must pass.
var gaps = map[string]string{
	"test/e2e.TestEgressTraffic": "egress to the internet: pods here reach only this machine (the cluster DNS resolves no outside name, and no traffic may leave the machine)",
}
