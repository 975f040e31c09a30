/* store_log: how the backends write a log line — through the store_log callback of
 * their configuration (store.h), or to stderr when it has none. */
#ifndef ZW_STORE_LOG_H
#define ZW_STORE_LOG_H

#include "store.h"

/* Formats one line (printf-style) and hands it to lg->fn, or writes it to stderr. */
void store_logf(const struct store_log *lg, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define store_log_info(lg, ...) store_logf(lg, STORE_LOG_INFO, __VA_ARGS__)
#define store_log_warn(lg, ...) store_logf(lg, STORE_LOG_WARN, __VA_ARGS__)
#define store_log_error(lg, ...) store_logf(lg, STORE_LOG_ERROR, __VA_ARGS__)

#endif
