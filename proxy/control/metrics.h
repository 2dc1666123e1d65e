/*
 * metrics.h - Prometheus text metrics and health on a loopback HTTP port (metrics.c).
 *
 *   GET /metrics   counters and gauges per route (text format 0.0.4)
 *   GET /healthz   200 "ok" while the process serves (liveness)
 *   GET /readyz    200 "ok" when every route's active target answered its last probe,
 *                  else 503 with one line per failing route and the cause
 *
 * The listen address is conf.metrics_listen ("off" or empty disables it). sy_metrics_start
 * also starts the health probes (probe.h), which set route->healthy.
 */
#ifndef SY_METRICS_H
#define SY_METRICS_H

#include <stddef.h>

int  sy_metrics_start(char *err, size_t errlen);
void sy_metrics_stop(void);

#endif
