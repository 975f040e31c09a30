/* maintenance: the background expiry sweep (docs/protocol.md, Expiry): idle documents and
 * expired tokens are purged periodically without blocking live traffic. */
#ifndef ZW_MAINTENANCE_H
#define ZW_MAINTENANCE_H

#include <stdint.h>

struct store;
struct maintenance;

/* Sweeps every `interval_s` seconds (first after `first_s`), removing documents idle
 * for more than `max_idle` seconds (0 = never) and expired tokens. */
struct maintenance *maintenance_start(struct store *store, int64_t max_idle, int first_s,
                                      int interval_s);
void maintenance_stop(struct maintenance *m);

#endif
