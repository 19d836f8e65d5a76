package kubelet

import (
	"errors"
	"time"

	"go.uber.org/zap"
)

var (
	errTest = errors.New("probe failed")
	nopLog  = zap.NewNop()
	timeNow = time.Now
)
