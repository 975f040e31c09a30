/* log: timestamped log lines to stderr and, when configured, to a file rotated at
 * a size limit (the old file kept as PATH.old). Thread-safe. */
#ifndef ZW_LOG_H
#define ZW_LOG_H

#include <stddef.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Opens PATH for appending (NULL: stderr only). Returns 0, or -1 with errno set. */
int log_open(const char *path, size_t rotate_bytes);
void log_close(void);
/* Lines below this level are dropped (default LOG_INFO). */
void log_set_level(enum log_level level);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
