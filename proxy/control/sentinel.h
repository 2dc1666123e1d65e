/*
 * sentinel.h - Redis targets given as redis-sentinel:// or rediss-sentinel:// endpoints:
 * the master's address comes from the sentinels, and a failover moves the route's sessions
 * to the new master (sentinel.c).
 */
#ifndef SY_SENTINEL_H
#define SY_SENTINEL_H

#include "conf/conf.h"

/*
 * Fill in the master address of every sentinel target of c (a configuration not yet in
 * force, owned by the caller): the address a watcher already follows for the same route,
 * side, sentinels and master name, else asked now (blocking: each sentinel in turn, each
 * bounded by SN_ASK_TIMEOUT_MS). A master no sentinel names stays unknown (host ""): its
 * sessions fail to connect until a watcher learns it. Main thread only.
 */
void sy_sentinel_adopt(conf_t *c);

/*
 * Start a watcher for each sentinel target of the configuration in force, and stop the
 * watchers whose target is gone or names other sentinels. Call after sy_switch_init and
 * after every reload. Main thread only.
 */
void sy_sentinel_sync(void);

#endif /* SY_SENTINEL_H */
