/* redis_sentinel: the Sentinel side of a link (redis_sentinel.h). Every call to a
 * Sentinel has a short timeout: one that is down must not delay finding the primary
 * through the others. */
#include "redis_sentinel.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/time.h>
#include <unistd.h>

#include "redis_link.h"
#include "store_log.h"

#define SENTINEL_TIMEOUT_MS 500
#define WATCH_RETRY_MS 500

struct sentinel_addr {
    char *host;
    int port;
};

struct redis_sentinel {
    struct sentinel_addr *addrs;
    size_t n;
    char *master, *password, *log_name;
    const struct store_log *log;

    void (*moved)(void *arg, const char *host, int port);
    void *moved_arg;
    pthread_t watcher;
    bool watching;
    atomic_bool stopping;
    int wake_fd;
};

static struct timeval ms_tv(int ms) { return (struct timeval){ ms / 1000, (ms % 1000) * 1000 }; }

struct redis_sentinel *redis_sentinel_new(const char *list, const char *master_name,
                                          const char *password, const char *log_name,
                                          const struct store_log *log, char *err, size_t err_len)
{
    struct redis_sentinel *s = calloc(1, sizeof *s);
    char *copy = list ? strdup(list) : NULL;
    if (!s || !copy) {
        snprintf(err, err_len, "out of memory");
        goto fail;
    }
    s->wake_fd = -1;
    s->log = log;
    s->master = strdup(master_name && *master_name ? master_name : "zwibbler");
    s->password = password && *password ? strdup(password) : NULL;
    s->log_name = strdup(log_name ? log_name : "redis");
    if (!s->master || !s->log_name || (password && *password && !s->password)) {
        snprintf(err, err_len, "out of memory");
        goto fail;
    }
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ' || *tok == '\t') tok++;
        size_t l = strlen(tok);
        while (l && (tok[l - 1] == ' ' || tok[l - 1] == '\t')) tok[--l] = 0;
        if (!l) continue;
        struct sentinel_addr a;
        bool unix_socket;
        int rc = redis_parse_server(tok, &a.host, &a.port, &unix_socket);
        if (rc == 0 && (unix_socket || !strrchr(tok, ':'))) { /* a port must be given */
            free(a.host);
            rc = -1;
        }
        if (rc) {
            snprintf(err, err_len, "RedisSentinels: '%s' is not host:port", tok);
            goto fail;
        }
        struct sentinel_addr *na = realloc(s->addrs, (s->n + 1) * sizeof *na);
        if (!na) {
            free(a.host);
            snprintf(err, err_len, "out of memory");
            goto fail;
        }
        s->addrs = na;
        s->addrs[s->n++] = a;
    }
    if (!s->n) {
        snprintf(err, err_len, "RedisSentinels: no Sentinel address given");
        goto fail;
    }
    free(copy);
    return s;
fail:
    free(copy);
    redis_sentinel_free(s);
    return NULL;
}

void redis_sentinel_free(struct redis_sentinel *s)
{
    if (!s) return;
    if (s->watching) {
        atomic_store(&s->stopping, true);
        uint64_t one = 1;
        ssize_t w = write(s->wake_fd, &one, sizeof one);
        (void)w;
        pthread_join(s->watcher, NULL);
    }
    if (s->wake_fd >= 0) close(s->wake_fd);
    for (size_t i = 0; i < s->n; i++) free(s->addrs[i].host);
    free(s->addrs);
    free(s->master);
    free(s->password);
    free(s->log_name);
    free(s);
}

/* Connects to Sentinel i and authenticates. NULL with a reason. */
static redisContext *sentinel_connect(struct redis_sentinel *s, size_t i, char *why, size_t why_len)
{
    redisContext *c =
        redisConnectWithTimeout(s->addrs[i].host, s->addrs[i].port, ms_tv(SENTINEL_TIMEOUT_MS));
    if (!c) {
        snprintf(why, why_len, "out of memory");
        return NULL;
    }
    if (c->err || redisSetTimeout(c, ms_tv(SENTINEL_TIMEOUT_MS)) != REDIS_OK) goto fail;
    if (s->password) {
        redisReply *r = redisCommand(c, "AUTH %s", s->password);
        if (!r) goto fail;
        if (r->type == REDIS_REPLY_ERROR) {
            snprintf(why, why_len, "AUTH: %.*s", (int)r->len, r->str);
            freeReplyObject(r);
            redisFree(c);
            return NULL;
        }
        freeReplyObject(r);
    }
    return c;
fail:
    snprintf(why, why_len, "%s", c->errstr[0] ? c->errstr : "connection failed");
    redisFree(c);
    return NULL;
}

int redis_sentinel_primary(struct redis_sentinel *s, char **host, int *port, char *why,
                           size_t why_len)
{
    size_t used = 0;
    bool reached = false;
    why[0] = 0;
    for (size_t i = 0; i < s->n; i++) {
        char one[160] = "";
        redisContext *c = sentinel_connect(s, i, one, sizeof one);
        redisReply *r =
            c ? redisCommand(c, "SENTINEL get-master-addr-by-name %s", s->master) : NULL;
        if (c && !r) snprintf(one, sizeof one, "%s", c->errstr[0] ? c->errstr : "no reply");
        if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
            r->element[0]->type == REDIS_REPLY_STRING &&
            r->element[1]->type == REDIS_REPLY_STRING) {
            long p = strtol(r->element[1]->str, NULL, 10);
            *host = strdup(r->element[0]->str);
            *port = (int)p;
            freeReplyObject(r);
            redisFree(c);
            if (!*host) {
                snprintf(why, why_len, "out of memory");
                return -1;
            }
            return 0;
        }
        if (r) {
            reached = true;
            if (r->type == REDIS_REPLY_ERROR)
                snprintf(one, sizeof one, "%.*s", (int)r->len, r->str);
            else
                snprintf(one, sizeof one, "does not know master '%s'", s->master);
            freeReplyObject(r);
        }
        if (c) redisFree(c);
        if (used < why_len)
            used += (size_t)snprintf(why + used, why_len - used, "%s%s:%d: %s", used ? "; " : "",
                                     s->addrs[i].host, s->addrs[i].port, one);
    }
    /* Say which setting is wrong: nobody answered, or nobody knows the name. */
    char detail[512];
    snprintf(detail, sizeof detail, "%s", why);
    if (reached)
        snprintf(why, why_len, "RedisMasterName: no Sentinel gives a primary for '%s' (%s)",
                 s->master, detail);
    else
        snprintf(why, why_len, "RedisSentinels: no Sentinel reachable (%s)", detail);
    return -1;
}

/* ---- the +switch-master watcher ---- */

/* "<name> <old ip> <old port> <new ip> <new port>" */
static void on_switch(struct redis_sentinel *s, const char *msg, size_t len)
{
    char buf[512], name[256], oldh[128], newh[128];
    int oldp, newp;
    if (len >= sizeof buf) return;
    memcpy(buf, msg, len);
    buf[len] = 0;
    if (sscanf(buf, "%255s %127s %d %127s %d", name, oldh, &oldp, newh, &newp) != 5) return;
    if (strcmp(name, s->master)) return;
    store_log_warn(s->log, "%s: Sentinel: primary '%s' moved from %s:%d to %s:%d", s->log_name,
                   name, oldh, oldp, newh, newp);
    s->moved(s->moved_arg, newh, newp);
}

static bool wait_wake(struct redis_sentinel *s, int fd, int ms)
{
    struct pollfd p[2] = { { .fd = s->wake_fd, .events = POLLIN }, { .fd = fd, .events = POLLIN } };
    int n = poll(p, fd >= 0 ? 2 : 1, ms);
    if (n < 0 && errno != EINTR) return false;
    return fd >= 0 && n > 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR));
}

static void *watch_main(void *arg)
{
    struct redis_sentinel *s = arg;
    size_t next = 0;
    while (!atomic_load(&s->stopping)) {
        char why[160];
        size_t i = next++ % s->n;
        redisContext *c = sentinel_connect(s, i, why, sizeof why);
        redisReply *r = c ? redisCommand(c, "SUBSCRIBE +switch-master") : NULL;
        if (!r) {
            if (c) redisFree(c);
            wait_wake(s, -1, WATCH_RETRY_MS);
            continue;
        }
        freeReplyObject(r);
        bool failed = false;
        while (!failed && !atomic_load(&s->stopping)) {
            if (!wait_wake(s, c->fd, 1000)) continue;
            if (redisBufferRead(c) != REDIS_OK) break;
            void *reply;
            for (;;) {
                if (redisGetReplyFromReader(c, &reply) != REDIS_OK) {
                    failed = true;
                    break;
                }
                if (!reply) break;
                redisReply *m = reply;
                if (m->type == REDIS_REPLY_ARRAY && m->elements == 3 &&
                    m->element[2]->type == REDIS_REPLY_STRING)
                    on_switch(s, m->element[2]->str, m->element[2]->len);
                freeReplyObject(m);
            }
        }
        redisFree(c);
    }
    return NULL;
}

int redis_sentinel_watch(struct redis_sentinel *s,
                         void (*moved)(void *arg, const char *host, int port), void *arg)
{
    s->moved = moved;
    s->moved_arg = arg;
    s->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->wake_fd < 0) return -1;
    if (pthread_create(&s->watcher, NULL, watch_main, s)) return -1;
    s->watching = true;
    return 0;
}
