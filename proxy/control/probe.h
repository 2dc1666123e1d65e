/*
 * probe.h - the health probes behind route->healthy and route->health_err (probe.c).
 *
 * Every route's active target is probed every few seconds, and again at once after a
 * switch or a RELOAD, with sy_target_probe on threads of the probes' own. Results are
 * stored on the control loop.
 */
#ifndef SY_PROBE_H
#define SY_PROBE_H

#include <stddef.h>
#include "proxy/core/sy.h"

int  sy_probes_start(char *err, size_t errlen);
void sy_probes_stop(void);

/* The target route i's health is about: the one its last result was for, else the active
 * one (right after a switch, before its first probe, the cause is still the old one's). */
conf_which_t sy_probe_target(size_t i);

#endif
