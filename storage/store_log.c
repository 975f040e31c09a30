/* store_log: formats the backends' log lines and sends them where the store's
 * configuration says (store_log.h). */
#include "store_log.h"

#include <stdarg.h>
#include <stdio.h>

void store_logf(const struct store_log *lg, int level, const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (lg && lg->fn) {
        lg->fn(lg->arg, level, line);
        return;
    }
    static const char *const names[] = { "DEBUG", "INFO", "WARN", "ERROR" };
    const char *name = level >= STORE_LOG_DEBUG && level <= STORE_LOG_ERROR ? names[level] : "?";
    fprintf(stderr, "%-5s %s\n", name, line); /* one call: lines from threads stay whole */
}
