/* redis_sentinel: asking Redis Sentinels where the primary is, and hearing at once
 * when they move it (+switch-master). Used by redis_link only. */
#ifndef ZW_REDIS_SENTINEL_H
#define ZW_REDIS_SENTINEL_H

#include <stddef.h>

struct redis_sentinel;
struct store_log;

/* Parses `list` ("host:port,host:port,...", at least one). NULL with a reason naming
 * RedisSentinels for a malformed list. Contacts nobody yet. Lines go to `log`, which
 * must outlive it. */
struct redis_sentinel *redis_sentinel_new(const char *list, const char *master_name,
                                          const char *password, const char *log_name,
                                          const struct store_log *log, char *err, size_t err_len);
/* Stops the watcher (if started) and frees. NULL is accepted. */
void redis_sentinel_free(struct redis_sentinel *s);

/* Asks the Sentinels in turn (SENTINEL get-master-addr-by-name) until one answers.
 * Returns 0 with *host malloc'd; -1 when none could be reached or none knows the
 * master (why: each one's answer, naming RedisSentinels or RedisMasterName). */
int redis_sentinel_primary(struct redis_sentinel *s, char **host, int *port, char *why,
                           size_t why_len);

/* Starts a thread subscribed to +switch-master at one reachable Sentinel (another
 * when it fails); on a switch of our master it calls moved(arg, host, port). Returns
 * 0, or -1 when the thread could not be started. */
int redis_sentinel_watch(struct redis_sentinel *s,
                         void (*moved)(void *arg, const char *host, int port), void *arg);

#endif
