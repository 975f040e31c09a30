/* metrics: owns the names, help texts and layout of the Prometheus metrics. */
#include "metrics.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "app.h"
#include "config.h"
#include "hub.h"
#include "lmdb_store.h"

static void head(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void metric_u64(FILE *f, const char *name, const char *type, const char *help, uint64_t v)
{
    head(f, name, type, help);
    fprintf(f, "%s %llu\n", name, (unsigned long long)v);
}

/* Batch sizes: batch_hist[i] counts commits of 2^i .. 2^(i+1)-1 operations, so the
 * cumulative bucket "le = 2^(i+1)-1" is the sum of the first i+1 entries. */
static void batch_histogram(FILE *f, const struct store_lmdb_stats *st)
{
    const char *name = "zwibbler_storage_commit_batch_size";
    head(f, name, "histogram", "Operations per LMDB write transaction (group commit).");
    uint64_t cum = 0;
    for (int i = 0; i < STORE_LMDB_HIST - 1; i++) {
        cum += st->batch_hist[i];
        fprintf(f, "%s_bucket{le=\"%llu\"} %llu\n", name, (unsigned long long)((2ull << i) - 1),
                (unsigned long long)cum);
    }
    fprintf(f, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)st->commits);
    fprintf(f, "%s_sum %llu\n%s_count %llu\n", name, (unsigned long long)st->ops, name,
            (unsigned long long)st->commits);
}

/* Latency: commit_hist[i] counts commits faster than 2^i microseconds (the last
 * entry: the rest), as cumulative buckets in seconds. */
static void latency_histogram(FILE *f, const struct store_lmdb_stats *st)
{
    const char *name = "zwibbler_storage_commit_seconds";
    head(f, name, "histogram",
         "Time from the start of an LMDB write transaction to its durable commit.");
    uint64_t cum = 0;
    for (int i = 0; i < STORE_LMDB_LAT_HIST - 1; i++) {
        cum += st->commit_hist[i];
        fprintf(f, "%s_bucket{le=\"%.6f\"} %llu\n", name, (double)(1ull << i) / 1e6,
                (unsigned long long)cum);
    }
    fprintf(f, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)st->commits);
    fprintf(f, "%s_sum %.9f\n%s_count %llu\n", name, (double)st->commit_ns / 1e9, name,
            (unsigned long long)st->commits);
}

static void storage_metrics(FILE *f, const struct app *app)
{
    if (strcmp(app->cfg->database, "lmdb")) return; /* the other backends keep no stats */
    struct store_lmdb_stats st;
    store_lmdb_stats(app->store, &st);
    metric_u64(f, "zwibbler_storage_commits_total", "counter", "LMDB write transactions committed.",
               st.commits);
    metric_u64(f, "zwibbler_storage_failed_commits_total", "counter",
               "LMDB write transactions that failed (their operations got a storage error).",
               st.failed_commits);
    metric_u64(f, "zwibbler_storage_map_size_bytes", "gauge", "Current LMDB map size.",
               st.map_size);
    metric_u64(f, "zwibbler_storage_map_resizes_total", "counter", "Times the LMDB map was grown.",
               st.map_resizes);
    batch_histogram(f, &st);
    latency_histogram(f, &st);
}

static uint64_t count_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d) return 0;
    uint64_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n > 0 ? n - 1 : 0; /* not the one opendir holds */
}

static void process_metrics(FILE *f)
{
    unsigned long long size = 0, resident = 0;
    FILE *s = fopen("/proc/self/statm", "r");
    if (s) {
        if (fscanf(s, "%llu %llu", &size, &resident) != 2) resident = 0;
        fclose(s);
    }
    metric_u64(f, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
               resident * (uint64_t)sysconf(_SC_PAGESIZE));
    metric_u64(f, "process_open_fds", "gauge", "Number of open file descriptors.",
               count_open_fds());
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        metric_u64(f, "process_max_fds", "gauge", "Maximum number of open file descriptors.",
                   (uint64_t)rl.rlim_cur);
}

char *metrics_render(const struct app *app, size_t *len)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f) return NULL;
    struct hub_stats hs;
    hub_get_stats(app->hub, &hs);
    metric_u64(f, "zwibbler_connections", "gauge", "Open WebSocket connections.", hs.connections);
    metric_u64(f, "zwibbler_connections_max", "gauge", "MaxConnections: the configured limit.",
               (uint64_t)app->max_connections);
    metric_u64(f, "zwibbler_documents", "gauge", "Documents with at least one connected client.",
               hs.documents);
    metric_u64(f, "zwibbler_appends_accepted_total", "counter", "APPENDs stored and acknowledged.",
               hs.appends_accepted);
    metric_u64(f, "zwibbler_appends_rejected_total", "counter",
               "APPENDs refused because the offset was not the document's length (NACK).",
               hs.appends_rejected);
    metric_u64(f, "zwibbler_received_bytes_total", "counter",
               "Protocol bytes received from clients.", hs.bytes_in);
    metric_u64(f, "zwibbler_sent_bytes_total", "counter", "Protocol bytes sent to clients.",
               hs.bytes_out);
    metric_u64(f, "zwibbler_messages_sent_total", "counter",
               "Protocol messages sent to clients (fan-out included).", hs.messages_out);
    metric_u64(f, "zwibbler_slow_client_disconnects_total", "counter",
               "Clients disconnected because their send queue overflowed.", hs.slow_disconnects);
    storage_metrics(f, app);
    process_metrics(f);
    if (fclose(f)) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}
