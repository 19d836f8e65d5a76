package bootstrap

import (
	"fmt"
	"time"

	overloadv3 "github.com/envoyproxy/go-control-plane/envoy/config/overload/v3"
	connsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/downstream_connections/v3"
	heapv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/fixed_heap/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Envoy's overload manager, so that a flood cannot take the gateway down,
// and growth of configuration cannot either. Past MaxConnections Envoy
// refuses new downstream connections, and from 80% of it (or of
// MaxHeapBytes) idle connections are closed sooner, down to after
// idleFloor at 95%, which sheds a flood of idle connections and makes room
// for clients that send requests. Near MaxHeapBytes Envoy returns free
// memory to the system, and from 90% resets the streams that buffer the
// most (1 MiB or more; more of them as pressure rises): what a request can
// make Envoy hold.
//
// Nothing refuses requests for heap: most of an Envoy's heap is its
// configuration, the same on every Envoy of the fleet, so a heap-triggered
// refusal (stop_accepting_requests) flips the whole fleet from serving
// everything to serving nothing at once, and frees none of it. The
// container's memory limit is the last guard; Sluice hears every Envoy's
// pressure (report.go) and says so well before (sluice status, metrics,
// the chart's alert).

const (
	connsMonitor = "envoy.resource_monitors.global_downstream_max_connections"
	heapMonitor  = "envoy.resource_monitors.fixed_heap"
	idleFloor    = 2 * time.Second
)

func overload(o Options) (*overloadv3.OverloadManager, error) {
	if o.MaxConnections == 0 && o.MaxHeapBytes == 0 {
		return nil, nil
	}
	// Envoy 1.40 evaluates triggers only on the refresh of a periodic
	// monitor such as the heap's; the connection monitor alone would bound
	// connections but never shed idle ones.
	if o.MaxHeapBytes == 0 {
		return nil, fmt.Errorf("max-connections needs max-heap-bytes: Envoy sheds idle connections only while a heap bound keeps its overload manager running")
	}
	m := &overloadv3.OverloadManager{RefreshInterval: durationpb.New(250 * time.Millisecond)}
	scaled := &overloadv3.Trigger_Scaled{Scaled: &overloadv3.ScaledTrigger{ScalingThreshold: 0.8, SaturationThreshold: 0.95}}
	reduce := &overloadv3.OverloadAction{Name: "envoy.overload_actions.reduce_timeouts"}
	add := func(name string, cfg proto.Message) error {
		a, err := anypb.New(cfg)
		if err != nil {
			return err
		}
		m.ResourceMonitors = append(m.ResourceMonitors, &overloadv3.ResourceMonitor{Name: name, ConfigType: &overloadv3.ResourceMonitor_TypedConfig{TypedConfig: a}})
		reduce.Triggers = append(reduce.Triggers, &overloadv3.Trigger{Name: name, TriggerOneof: scaled})
		return nil
	}
	if o.MaxConnections > 0 {
		if err := add(connsMonitor, &connsv3.DownstreamConnectionsConfig{MaxActiveDownstreamConnections: int64(o.MaxConnections)}); err != nil {
			return nil, err
		}
	}
	if o.MaxHeapBytes > 0 {
		if err := add(heapMonitor, &heapv3.FixedHeapConfig{MaxHeapSizeBytes: o.MaxHeapBytes}); err != nil {
			return nil, err
		}
		threshold := func(v float64) []*overloadv3.Trigger {
			return []*overloadv3.Trigger{{Name: heapMonitor, TriggerOneof: &overloadv3.Trigger_Threshold{Threshold: &overloadv3.ThresholdTrigger{Value: v}}}}
		}
		m.Actions = append(m.Actions,
			&overloadv3.OverloadAction{Name: "envoy.overload_actions.shrink_heap", Triggers: threshold(0.95)},
			&overloadv3.OverloadAction{Name: "envoy.overload_actions.reset_high_memory_stream", Triggers: []*overloadv3.Trigger{{
				Name: heapMonitor, TriggerOneof: &overloadv3.Trigger_Scaled{Scaled: &overloadv3.ScaledTrigger{ScalingThreshold: 0.9, SaturationThreshold: 0.98}},
			}}})
		// Streams are tracked from 2^(n-1) bytes buffered in Envoy 1.40's
		// code (its documentation says 2^n): 21 tracks from 1 MiB.
		m.BufferFactoryConfig = &overloadv3.BufferFactoryConfig{MinimumAccountToTrackPowerOfTwo: 21}
	}
	timers, err := anypb.New(&overloadv3.ScaleTimersOverloadActionConfig{TimerScaleFactors: []*overloadv3.ScaleTimersOverloadActionConfig_ScaleTimer{{
		Timer:          overloadv3.ScaleTimersOverloadActionConfig_HTTP_DOWNSTREAM_CONNECTION_IDLE,
		OverloadAdjust: &overloadv3.ScaleTimersOverloadActionConfig_ScaleTimer_MinTimeout{MinTimeout: durationpb.New(idleFloor)},
	}}})
	if err != nil {
		return nil, err
	}
	reduce.TypedConfig = timers
	m.Actions = append([]*overloadv3.OverloadAction{reduce}, m.Actions...)
	return m, nil
}
