/* log: owns the process-wide log sink and its size-based rotation. */
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static FILE *log_file;
static char *log_path;
static size_t log_rotate_bytes;
static size_t log_written;
static enum log_level log_min = LOG_INFO;

static const char *const level_names[] = { "DEBUG", "INFO", "WARN", "ERROR" };

int log_open(const char *path, size_t rotate_bytes)
{
    pthread_mutex_lock(&log_lock);
    if (log_file) fclose(log_file);
    free(log_path);
    log_file = NULL;
    log_path = NULL;
    int rc = 0;
    if (path && *path) {
        log_file = fopen(path, "a");
        if (!log_file) {
            rc = -1;
        } else {
            struct stat st;
            log_written = fstat(fileno(log_file), &st) == 0 ? (size_t)st.st_size : 0;
            log_path = strdup(path);
            log_rotate_bytes = rotate_bytes;
        }
    }
    pthread_mutex_unlock(&log_lock);
    return rc;
}

void log_close(void) { log_open(NULL, 0); }

void log_set_level(enum log_level level) { log_min = level; }

/* Called with log_lock held. A failed rename keeps writing to the same file rather
 * than losing lines. */
static void rotate_if_needed(void)
{
    if (!log_file || !log_rotate_bytes || log_written < log_rotate_bytes) return;
    char old[4096];
    snprintf(old, sizeof old, "%s.old", log_path);
    fclose(log_file);
    rename(log_path, old);
    log_file = fopen(log_path, "a");
    log_written = 0;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    if (level < log_min) return;
    char line[2048];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    int n = (int)strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
    n += snprintf(line + n, sizeof line - (size_t)n, ".%03ldZ %-5s ", ts.tv_nsec / 1000000,
                  level_names[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0) m = 0;
    n += m;
    if ((size_t)n > sizeof line - 2) n = sizeof line - 2;
    line[n++] = '\n';

    int saved = errno;
    pthread_mutex_lock(&log_lock);
    fwrite(line, 1, (size_t)n, stderr);
    if (log_file) {
        rotate_if_needed();
        if (log_file) {
            fwrite(line, 1, (size_t)n, log_file);
            fflush(log_file);
            log_written += (size_t)n;
        }
    }
    pthread_mutex_unlock(&log_lock);
    errno = saved;
}
