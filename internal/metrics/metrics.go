// Package metrics holds minigate's Prometheus collectors. They live in one
// registry of their own (not the global default), registered once per
// process, so that several minigate instances in one test process share them
// without duplicate-registration panics.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Registry is minigate's metrics registry.
var Registry = prometheus.NewRegistry()

var (
	// HTTPRequests counts requests by route pattern, method and status.
	HTTPRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "minigate_http_requests_total",
		Help: "HTTP requests by route pattern, method and status.",
	}, []string{"route", "method", "status"})

	// HTTPDuration observes request latency by route pattern and method.
	HTTPDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "minigate_http_request_duration_seconds",
		Help:    "HTTP request latency by route pattern and method.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"route", "method"})

	// PlatformCalls counts calls to platform APIs by outcome
	// (ok, platform_error, timeout, unreachable, error).
	PlatformCalls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "minigate_platform_api_calls_total",
		Help: "Calls to platform APIs by platform, api and outcome.",
	}, []string{"platform", "api", "outcome"})

	// PlatformDuration observes platform API latency.
	PlatformDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "minigate_platform_api_duration_seconds",
		Help:    "Platform API call latency by platform and api.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"platform", "api"})

	// Callbacks counts platform callbacks by kind (messages, payments) and
	// outcome (accepted, duplicate, rejected, error).
	Callbacks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "minigate_callbacks_total",
		Help: "Platform callbacks by app, kind and outcome.",
	}, []string{"app", "kind", "outcome"})

	// OrderMoves counts order state moves by app, from and to state, and
	// source (notify, query, api, reconcile). A move is counted when it is
	// made, inside its transaction; the rare transaction that then fails
	// to commit was counted all the same.
	OrderMoves = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "minigate_order_state_moves_total",
		Help: "Order state moves by app, from state, to state and source.",
	}, []string{"app", "from", "to", "source"})

	// EventDeliveries counts attempts to deliver events to the business
	// backend by event type and outcome: delivered, failed (retried later)
	// or given_up (the last attempt failed).
	EventDeliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "minigate_event_deliveries_total",
		Help: "Event delivery attempts by event type and outcome (delivered, failed, given_up).",
	}, []string{"type", "outcome"})

	// EventDeliveryDuration observes how long the backend took to answer
	// an attempt.
	EventDeliveryDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "minigate_event_delivery_duration_seconds",
		Help:    "Event delivery attempt latency.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 15},
	})

	// Pruned counts rows deleted by retention, by table.
	Pruned = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "minigate_retention_pruned_total",
		Help: "Rows deleted by the retention job, by table.",
	}, []string{"table"})
)

func init() {
	Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		HTTPRequests, HTTPDuration, PlatformCalls, PlatformDuration, Callbacks,
		OrderMoves, EventDeliveries, EventDeliveryDuration, Pruned,
	)
}

// Handler serves the registry in the Prometheus text format.
func Handler() http.Handler {
	return promhttp.HandlerFor(Registry, promhttp.HandlerOpts{})
}
