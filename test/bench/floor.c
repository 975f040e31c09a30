/* floor: the least any Zwibbler collaboration server can spend, for `make bench`.
 *
 * A relay and nothing more: one thread on epoll, plain ws:// (HTTP/1.1 upgrade,
 * masked client frames, ping/pong, close), INIT / APPEND / ACK / NACK and the relay
 * of each accepted APPEND to the document's other clients. Documents live in memory
 * only (a hash table of byte buffers with their member lists); no storage, no auth,
 * no keys, no limits beyond what keeps it from falling over. Each delivery is one
 * send() to each client; what the socket does not take is queued for that client
 * and sent on EPOLLOUT. A plain GET (no upgrade) gets "200 ok" and a close, so the
 * bench can tell when it is ready.
 *
 *   floor --port N [--bind 127.0.0.1]
 *
 * Protocol (big-endian; every message starts with type u8, more u8 — more is
 * assumed 0, no continuations):
 *   INIT 0x01  v2: version u16=2, maxMessageSize u32, creationMode u8, offset u64,
 *                  docIdLength u8, docId, initialData
 *              v3: version u16=3, maxMessageSize u32, creationMode u8, generation u32,
 *                  offset u64, docIdLength u32, docId, initialData
 *   APPEND     v2 0x02: offset u64, data;  v3 0x05: generation u32, offset u64, data
 *   ACK 0x81   ack u16 (1 accepted, 0 NACK), length u64
 * After INIT the document is created if missing (with initialData; the client then
 * starts at its length), else the client starts at its INIT offset; one APPEND with
 * everything from there follows, even when empty. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_EVENTS 512
#define READ_BUF (64 * 1024)
#define MAX_HEADER 8192
#define MAX_PAYLOAD ((uint64_t)64 << 20)  /* largest client frame */
#define MAX_QUEUE ((size_t)256 << 20)     /* a client this far behind is dropped */
#define ACCEPT_BATCH 256

enum { ST_HTTP, ST_WS };

struct doc;

struct conn {
    int fd;
    uint8_t state;   /* ST_HTTP until the upgrade */
    uint8_t proto;   /* 2 or 3, from INIT */
    uint8_t dead;    /* closed; freed at the end of the event batch */
    uint8_t closing; /* close once the queue is sent */
    uint8_t *in;     /* bytes of an unfinished header or frame */
    size_t in_len, in_cap;
    uint8_t *out;    /* bytes the socket did not take yet */
    size_t out_off, out_len, out_cap;
    struct doc *doc;
    size_t slot;     /* index in doc->members */
    struct conn *next_dead;
};

struct doc {
    struct doc *next; /* hash chain */
    uint64_t hash;
    uint8_t *id;
    size_t id_len;
    uint8_t *data;
    size_t len, cap;
    struct conn **members;
    size_t n, n_cap;
};

static int epfd;
static struct doc **table;
static size_t n_buckets, n_docs;
static struct conn *grave;
static uint8_t rbuf[READ_BUF];
static uint8_t *scratch[2];
static size_t scratch_cap[2];
static volatile sig_atomic_t stop;

/* ---- small helpers ---- */

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) << 32 | get32(p + 4); }
static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8), p[1] = (uint8_t)v; }
static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

/* Makes room for need bytes in *buf; 0, or -1 when out of memory. */
static int reserve(uint8_t **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 256;
    while (n < need)
        n *= 2;
    uint8_t *p = realloc(*buf, n);
    if (!p)
        return -1;
    *buf = p;
    *cap = n;
    return 0;
}

/* ---- connections ---- */

static void kill_conn(struct conn *c)
{
    if (c->dead)
        return;
    c->dead = 1;
    close(c->fd); /* also leaves the epoll set */
    c->fd = -1;
    free(c->in);
    free(c->out);
    c->in = c->out = NULL;
    c->in_len = c->out_len = c->out_off = 0;
    c->next_dead = grave;
    grave = c;
}

/* Frees the connections killed during the last batch of events. Their documents
 * drop them only now, so a relay loop never sees its member list change. */
static void reap(void)
{
    while (grave) {
        struct conn *c = grave;
        grave = c->next_dead;
        struct doc *d = c->doc;
        if (d) {
            struct conn *last = d->members[--d->n];
            d->members[c->slot] = last;
            last->slot = c->slot;
        }
        free(c);
    }
}

static void want_out(struct conn *c, int on)
{
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev))
        kill_conn(c);
}

/* One delivery: one send(); the rest, if any, waits in the client's queue. */
static void send_bytes(struct conn *c, const uint8_t *p, size_t n)
{
    if (c->dead)
        return;
    if (c->out_off == c->out_len) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w == (ssize_t)n)
            return;
        if (w < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                kill_conn(c);
                return;
            }
            w = 0;
        }
        p += w;
        n -= (size_t)w;
        c->out_off = c->out_len = 0;
        want_out(c, 1);
        if (c->dead)
            return;
    }
    if (c->out_len + n > c->out_cap && c->out_off) {
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
    }
    if (c->out_len + n > MAX_QUEUE || reserve(&c->out, &c->out_cap, c->out_len + n)) {
        kill_conn(c);
        return;
    }
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
}

static void on_writable(struct conn *c)
{
    if (c->out_off < c->out_len) {
        ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                kill_conn(c);
            return;
        }
        c->out_off += (size_t)w;
        if (c->out_off < c->out_len)
            return;
    }
    free(c->out); /* idle clients hold no buffer */
    c->out = NULL;
    c->out_off = c->out_len = c->out_cap = 0;
    if (c->closing)
        kill_conn(c);
    else
        want_out(c, 0);
}

/* Ends the connection once what is queued has gone out. */
static void close_after_send(struct conn *c)
{
    if (c->out_off == c->out_len)
        kill_conn(c);
    else
        c->closing = 1;
}

/* Builds one unmasked server frame, opcode op, payload a then b, in scratch[k]. */
static size_t frame(int k, uint8_t op, const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    size_t n = an + bn, hl = n < 126 ? 2 : n <= 0xffff ? 4 : 10;
    if (reserve(&scratch[k], &scratch_cap[k], hl + n)) {
        fprintf(stderr, "floor: out of memory\n");
        exit(1);
    }
    uint8_t *f = scratch[k];
    f[0] = 0x80 | op;
    if (hl == 2) {
        f[1] = (uint8_t)n;
    } else if (hl == 4) {
        f[1] = 126;
        put16(f + 2, (uint16_t)n);
    } else {
        f[1] = 127;
        put64(f + 2, n);
    }
    if (an)
        memcpy(f + hl, a, an);
    if (bn)
        memcpy(f + hl + an, b, bn);
    return hl + n;
}

/* The APPEND header for a client of protocol proto: type, more, [generation], offset. */
static size_t append_header(uint8_t *h, int proto, uint64_t off)
{
    if (proto == 2) {
        h[0] = 0x02, h[1] = 0;
        put64(h + 2, off);
        return 10;
    }
    memset(h, 0, 6);
    h[0] = 0x05;
    put64(h + 6, off);
    return 14;
}

static void send_ack(struct conn *c, int ack, uint64_t len)
{
    uint8_t m[14] = {0x82, 12, 0x81, 0};
    put16(m + 4, (uint16_t)ack);
    put64(m + 6, len);
    send_bytes(c, m, sizeof m);
}

/* ---- documents ---- */

static uint64_t hash_id(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static struct doc *find_doc(const uint8_t *id, size_t n, uint64_t h)
{
    if (!n_buckets)
        return NULL;
    for (struct doc *d = table[h & (n_buckets - 1)]; d; d = d->next)
        if (d->hash == h && d->id_len == n && !memcmp(d->id, id, n))
            return d;
    return NULL;
}

static struct doc *new_doc(const uint8_t *id, size_t n, uint64_t h)
{
    if (n_docs >= n_buckets) {
        size_t nb = n_buckets ? n_buckets * 2 : 1024;
        struct doc **t = calloc(nb, sizeof *t);
        if (!t)
            return NULL;
        for (size_t i = 0; i < n_buckets; i++)
            for (struct doc *d = table[i], *next; d; d = next) {
                next = d->next;
                d->next = t[d->hash & (nb - 1)];
                t[d->hash & (nb - 1)] = d;
            }
        free(table);
        table = t;
        n_buckets = nb;
    }
    struct doc *d = calloc(1, sizeof *d);
    if (!d || !(d->id = malloc(n ? n : 1))) {
        free(d);
        return NULL;
    }
    memcpy(d->id, id, n);
    d->id_len = n;
    d->hash = h;
    d->next = table[h & (n_buckets - 1)];
    table[h & (n_buckets - 1)] = d;
    n_docs++;
    return d;
}

/* ---- the protocol ---- */

static void on_init(struct conn *c, const uint8_t *p, size_t n)
{
    if (c->doc || n < 4) {
        kill_conn(c);
        return;
    }
    uint64_t off;
    size_t idl, at;
    if (get16(p + 2) == 2) {
        if (n < 18 || (idl = p[17]) > n - 18) {
            kill_conn(c);
            return;
        }
        off = get64(p + 9);
        at = 18;
        c->proto = 2;
    } else {
        if (n < 25 || get32(p + 21) > n - 25) {
            kill_conn(c);
            return;
        }
        off = get64(p + 13);
        idl = get32(p + 21);
        at = 25;
        c->proto = 3;
    }
    const uint8_t *id = p + at, *init = p + at + idl;
    size_t init_len = n - at - idl;
    uint64_t h = hash_id(id, idl);
    struct doc *d = find_doc(id, idl, h);
    uint64_t start = off;
    if (!d) {
        if (!(d = new_doc(id, idl, h)) || reserve(&d->data, &d->cap, init_len)) {
            kill_conn(c);
            return;
        }
        if (init_len)
            memcpy(d->data, init, init_len);
        d->len = init_len;
        start = d->len;
    }
    if (start > d->len)
        start = d->len;
    if (d->n == d->n_cap) {
        size_t nc = d->n_cap ? d->n_cap * 2 : 16;
        struct conn **m = realloc(d->members, nc * sizeof *m);
        if (!m) {
            kill_conn(c);
            return;
        }
        d->members = m;
        d->n_cap = nc;
    }
    c->doc = d;
    c->slot = d->n;
    d->members[d->n++] = c;
    uint8_t h2[14];
    size_t hl = append_header(h2, c->proto, start);
    size_t fl = frame(0, 0x2, h2, hl, d->data + start, (size_t)(d->len - start));
    send_bytes(c, scratch[0], fl);
}

static void on_append(struct conn *c, const uint8_t *p, size_t n)
{
    size_t hl = p[0] == 0x05 ? 14 : 10;
    struct doc *d = c->doc;
    if (!d || n < hl) {
        kill_conn(c);
        return;
    }
    uint64_t off = get64(p + hl - 8);
    if (off != d->len) {
        send_ack(c, 0, d->len);
        return;
    }
    const uint8_t *data = p + hl;
    size_t dl = n - hl;
    if (reserve(&d->data, &d->cap, d->len + dl)) {
        kill_conn(c);
        return;
    }
    memcpy(d->data + d->len, data, dl);
    d->len += dl;
    send_ack(c, 1, d->len);
    /* One frame per protocol version, built once, sent to every other member. */
    size_t fl[2] = {0, 0};
    for (size_t i = 0; i < d->n; i++) {
        struct conn *m = d->members[i];
        if (m == c || m->dead)
            continue;
        int k = m->proto == 2;
        if (!fl[k]) {
            uint8_t h[14];
            size_t l = append_header(h, m->proto, off);
            fl[k] = frame(k, 0x2, h, l, data, dl);
        }
        send_bytes(m, scratch[k], fl[k]);
    }
}

static void on_message(struct conn *c, const uint8_t *p, size_t n)
{
    if (n < 2) {
        kill_conn(c);
        return;
    }
    switch (p[0]) {
    case 0x01:
        on_init(c, p, n);
        break;
    case 0x02:
    case 0x05:
        on_append(c, p, n);
        break;
    default:
        break; /* keys, broadcasts: not the floor's business */
    }
}

/* ---- WebSocket framing and the HTTP upgrade ---- */

/* Handles every complete frame in p[0..n); returns the bytes used. */
static size_t on_frames(struct conn *c, uint8_t *p, size_t n)
{
    size_t used = 0;
    while (n - used >= 2 && !c->dead && !c->closing) {
        uint8_t *f = p + used;
        size_t avail = n - used, hl = 2;
        uint64_t len = f[1] & 0x7f;
        if (!(f[1] & 0x80)) { /* clients must mask */
            kill_conn(c);
            break;
        }
        if (len == 126) {
            if (avail < 4)
                break;
            len = get16(f + 2);
            hl = 4;
        } else if (len == 127) {
            if (avail < 10)
                break;
            len = get64(f + 2);
            hl = 10;
        }
        hl += 4;
        if (len > MAX_PAYLOAD) {
            kill_conn(c);
            break;
        }
        if (avail < hl + len)
            break;
        const uint8_t *mask = f + hl - 4;
        uint8_t *pl = f + hl;
        for (size_t i = 0; i < len; i++)
            pl[i] ^= mask[i & 3];
        used += hl + (size_t)len;
        int op = f[0] & 0x0f, fin = f[0] & 0x80;
        switch (op) {
        case 0x1:
        case 0x2:
            if (!fin) /* fragmented frames: Zwibbler clients send none */
                kill_conn(c);
            else
                on_message(c, pl, (size_t)len);
            break;
        case 0x8: /* close: echo the status, then go */
            send_bytes(c, scratch[0], frame(0, 0x8, pl, len >= 2 ? 2 : 0, NULL, 0));
            if (!c->dead)
                close_after_send(c);
            break;
        case 0x9:
            if (len > 125)
                kill_conn(c);
            else
                send_bytes(c, scratch[0], frame(0, 0xA, pl, (size_t)len, NULL, 0));
            break;
        case 0xA:
            break;
        default:
            kill_conn(c);
        }
    }
    return used;
}

/* Finds header name (with its colon) in the request; its value, trimmed, or NULL. */
static const char *header(const char *req, const char *name, size_t *vlen)
{
    size_t nl = strlen(name);
    for (const char *l = strstr(req, "\r\n"); l && l[2] != '\r'; l = strstr(l + 2, "\r\n")) {
        const char *s = l + 2;
        if (strncasecmp(s, name, nl))
            continue;
        s += nl;
        while (*s == ' ' || *s == '\t')
            s++;
        const char *e = strstr(s, "\r\n");
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        *vlen = (size_t)(e - s);
        return s;
    }
    return NULL;
}

/* Handles the request header once complete; returns the bytes used (0: wait). */
static size_t on_http(struct conn *c, uint8_t *p, size_t n)
{
    uint8_t *end = memmem(p, n, "\r\n\r\n", 4);
    if (!end) {
        if (n > MAX_HEADER)
            kill_conn(c);
        return 0;
    }
    size_t hl = (size_t)(end - p) + 4;
    char req[MAX_HEADER + 8];
    if (hl > MAX_HEADER) {
        kill_conn(c);
        return 0;
    }
    memcpy(req, p, hl);
    req[hl] = 0;
    size_t kl;
    const char *key = header(req, "Sec-WebSocket-Key:", &kl);
    if (!key || kl > 64) {
        static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                 "Content-Length: 3\r\nConnection: close\r\n\r\nok\n";
        static const char bad[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                  "Connection: close\r\n\r\n";
        int get = !strncmp(req, "GET ", 4);
        send_bytes(c, (const uint8_t *)(get ? ok : bad), get ? sizeof ok - 1 : sizeof bad - 1);
        if (!c->dead)
            close_after_send(c);
        return hl;
    }
    char in[128];
    unsigned char md[EVP_MAX_MD_SIZE], acc[64];
    unsigned mdl = 0;
    int il = snprintf(in, sizeof in, "%.*s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", (int)kl, key);
    if (!EVP_Digest(in, (size_t)il, md, &mdl, EVP_sha1(), NULL)) {
        kill_conn(c);
        return 0;
    }
    EVP_EncodeBlock(acc, md, (int)mdl);
    char resp[256];
    int rl = snprintf(resp, sizeof resp,
                      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", (char *)acc);
    send_bytes(c, (const uint8_t *)resp, (size_t)rl);
    c->state = ST_WS;
    return hl;
}

static size_t on_bytes(struct conn *c, uint8_t *p, size_t n)
{
    size_t used = 0;
    if (c->state == ST_HTTP)
        used = on_http(c, p, n);
    if (c->state == ST_WS && !c->dead)
        used += on_frames(c, p + used, n - used);
    return used;
}

static void on_readable(struct conn *c)
{
    ssize_t r = recv(c->fd, rbuf, sizeof rbuf, 0);
    if (r <= 0) {
        if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            kill_conn(c);
        return;
    }
    if (c->closing)
        return; /* nothing more is read once we close */
    if (!c->in_len) {
        /* The usual case: whole frames, handled straight from the read buffer. */
        size_t used = on_bytes(c, rbuf, (size_t)r);
        if (c->dead || used == (size_t)r || c->closing)
            return;
        if (reserve(&c->in, &c->in_cap, (size_t)r - used)) {
            kill_conn(c);
            return;
        }
        memcpy(c->in, rbuf + used, (size_t)r - used);
        c->in_len = (size_t)r - used;
        return;
    }
    if (reserve(&c->in, &c->in_cap, c->in_len + (size_t)r)) {
        kill_conn(c);
        return;
    }
    memcpy(c->in + c->in_len, rbuf, (size_t)r);
    c->in_len += (size_t)r;
    size_t used = on_bytes(c, c->in, c->in_len);
    if (c->dead)
        return;
    c->in_len -= used;
    if (!c->in_len) {
        free(c->in);
        c->in = NULL;
        c->in_cap = 0;
    } else if (used) {
        memmove(c->in, c->in + used, c->in_len);
    }
}

static void accept_some(int lfd)
{
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) {
                static int said;
                if (!said++)
                    fprintf(stderr, "floor: out of file descriptors\n");
            }
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (!c || epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev)) {
            free(c);
            close(fd);
            continue;
        }
        c->fd = fd;
    }
}

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

int main(int argc, char **argv)
{
    const char *bind_addr = "127.0.0.1";
    int port = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--port"))
            port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--bind"))
            bind_addr = argv[i + 1];
        else
            port = -1;
    }
    if (port <= 0 || port > 65535 || argc % 2 == 0) {
        fprintf(stderr, "usage: floor --port N [--bind 127.0.0.1]\n");
        return 2;
    }
    struct rlimit rl;
    if (!getrlimit(RLIMIT_NOFILE, &rl)) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sa.sa_handler = on_signal; /* no SA_RESTART: epoll_wait returns */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, bind_addr, &addr.sin_addr) != 1) {
        fprintf(stderr, "floor: bad --bind address %s\n", bind_addr);
        return 2;
    }
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) || bind(lfd, (struct sockaddr *)&addr, sizeof addr) || listen(lfd, 65535)) {
        perror("floor: listen");
        return 1;
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epfd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev)) {
        perror("floor: epoll");
        return 1;
    }
    fprintf(stderr, "floor: listening on %s:%d (%llu open files)\n", bind_addr, port,
            (unsigned long long)rl.rlim_cur);

    struct epoll_event ev[MAX_EVENTS];
    while (!stop) {
        int n = epoll_wait(epfd, ev, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("floor: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = ev[i].data.ptr;
            if (!c) {
                accept_some(lfd);
                continue;
            }
            if (c->dead)
                continue;
            if (ev[i].events & EPOLLOUT)
                on_writable(c);
            if (!c->dead && (ev[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                on_readable(c);
        }
        reap();
    }
    return 0;
}
