package main

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
)

// A failure gaps.go does not explain is repeated after the table with its
// last lines; one it explains, and passes, are not.
func TestPrintTableRepeatsUnexplainedFailures(t *testing.T) {
	rs := []result{
		{Package: "test/e2e", Test: "TestHelloWorld", Result: "PASS"},
		{Package: "test/e2e", Test: "TestExplained", Result: "FAIL", Gap: "a gap", Reason: "explained reason"},
		{Package: "test/e2e", Test: "TestWebSocket", Result: "FAIL", Reason: "websocket.go:80: dial failed\nwebsocket.go:81: 503"},
	}
	var b bytes.Buffer
	printTable(&b, 1, 1, rs)
	out := b.String()
	want := "e2e TestWebSocket failed; its last lines:\nwebsocket.go:80: dial failed\nwebsocket.go:81: 503\n"
	if i := strings.Index(out, want); i < 0 || i < strings.LastIndex(out, "UNEXPLAINED FAILURE") {
		t.Errorf("the unexplained failure's lines are not after the table:\n%s", out)
	}
	if strings.Contains(out, "explained reason") || strings.Contains(out, "TestHelloWorld failed") {
		t.Errorf("an explained failure or a pass is repeated:\n%s", out)
	}
}

// The harness fails closed: a binary that crashes before any test, a
// package that fails with every test passed, and a listed test that never
// reports each leave a failure no gap explains; a clean run leaves none.
func TestCloseOut(t *testing.T) {
	ev := func(action, test string) string {
		return `{"Action":"` + action + `","Package":"test/e2e","Test":"` + test + `","Output":"x\n"}` + "\n"
	}
	exit1 := errors.New("exit status 1")
	for _, c := range []struct {
		name   string
		stream string
		exit   error
		fail   []string // tests expected as unexplained failures
	}{
		{"clean", ev("run", "TestA") + ev("pass", "TestA") + ev("run", "TestB") + ev("skip", "TestB") + ev("pass", ""), nil, nil},
		{"crash before any test", ev("output", "") + ev("fail", ""), exit1, []string{"TestA", "TestB"}},
		{"unknown flag", "flag provided but not defined: -foo\n", errors.New("exit status 2"), []string{"TestA", "TestB"}},
		{"package failure", ev("pass", "TestA") + ev("pass", "TestB") + ev("fail", ""), exit1, []string{"(package)"}},
		{"non-zero exit, nothing failed", ev("pass", "TestA") + ev("pass", "TestB") + ev("pass", ""), exit1, []string{"(package)"}},
		{"missing test", ev("pass", "TestA") + ev("pass", ""), nil, []string{"TestB"}},
		{"hung until the timeout", ev("pass", "TestA") + ev("run", "TestB") + ev("output", "") + ev("fail", ""), exit1, []string{"TestB"}},
		{"a failed test explains the exit", ev("pass", "TestA") + ev("fail", "TestB") + ev("fail", ""), exit1, []string{"TestB"}},
	} {
		rs, pkgFailed := collect(strings.NewReader(c.stream), "test/e2e", io.Discard, io.Discard)
		rs = closeOut("test/e2e", []string{"TestA", "TestB"}, rs, pkgFailed, c.exit)
		judge(rs)
		var failed []string
		for _, r := range rs {
			if r.Result == "FAIL" && r.Gap == "" {
				failed = append(failed, r.Test)
			}
		}
		if !slices.Equal(failed, c.fail) {
			t.Errorf("%s: unexplained failures %v, want %v (%+v)", c.name, failed, c.fail, rs)
		}
	}
}

func TestListedTests(t *testing.T) {
	out := "TestHelloWorld\nTestGRPCUnaryPing\n{\"level\":\"info\",\"msg\":\"a log line\"}\nok  \ttest/e2e\t0.01s\n"
	if got := listedTests(out); !slices.Equal(got, []string{"TestHelloWorld", "TestGRPCUnaryPing"}) {
		t.Errorf("listedTests = %v", got)
	}
}

// -suite ci runs every listed test but the left-out ones, and refuses a
// left-out name the binary does not list (a stale entry).
func TestWithoutLeftOut(t *testing.T) {
	got, err := withoutLeftOut("test/e2e", []string{"TestA", "TestSlow", "TestB"}, []string{"TestSlow"})
	if err != nil || !slices.Equal(got, []string{"TestA", "TestB"}) {
		t.Errorf("withoutLeftOut = %v, %v", got, err)
	}
	if _, err := withoutLeftOut("test/e2e", []string{"TestA"}, []string{"TestGone"}); err == nil {
		t.Error("a left-out test the binary does not list was accepted")
	}
}

// Every left-out test is in one of the four packages, has a reason, and
// is printed with it.
func TestLeftOutPrinted(t *testing.T) {
	var b bytes.Buffer
	printLeftOut(&b)
	for key, why := range leftOut {
		p, test, _ := strings.Cut(key, ".")
		if !slices.ContainsFunc(pkgs, func(q pkg) bool { return q.name == p }) {
			t.Errorf("%s: %s is not one of the suite's packages", key, p)
		}
		if len(skipped(p)) == 0 || why == "" {
			t.Errorf("%s: no reason, or not skipped", key)
		}
		if !strings.Contains(b.String(), test) || !strings.Contains(b.String(), why) {
			t.Errorf("%s is not printed with its reason:\n%s", key, b.String())
		}
	}
}
