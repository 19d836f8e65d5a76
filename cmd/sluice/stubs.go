package main

import (
	"errors"
	"io"
)

func runController(args []string, stderr io.Writer) error {
	return errors.New("not built yet")
}

func runBootstrap(args []string, stdout, stderr io.Writer) error {
	return errors.New("not built yet")
}
