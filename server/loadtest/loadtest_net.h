/* loadtest_net: the byte transport under the load tester's WebSocket client: URL
 * parsing and resolution (once per run), non-blocking TCP connects, and TLS for
 * wss:// with OpenSSL driven in non-blocking mode. Nothing here blocks. */
#ifndef ZW_LOADTEST_NET_H
#define ZW_LOADTEST_NET_H

#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

struct ssl_ctx_st;
struct ssl_st;

/* Where every connection of a run goes. */
struct lt_net_target {
    int tls;
    char host[256];     /* SNI and certificate name */
    char host_hdr[300]; /* Host header: host[:port] as in the URL */
    char path[1024];    /* request target, query included */
    struct sockaddr_storage addr;
    socklen_t addr_len;
    struct ssl_ctx_st *ssl_ctx;
};

/* One connection's transport. */
struct lt_net_conn {
    int fd;             /* -1 when closed */
    struct ssl_st *ssl; /* NULL for plain TCP or before the TLS handshake */
    int wants_write;    /* OpenSSL needs the socket writable to go on */
    int eof;            /* the peer ended the stream in order */
};

/* Error texts go to err (size err_len) unless it already holds one: the first
 * cause of a failure is the one worth reporting. */

/* Parses ws://host[:port]/path or wss://... (http/https accepted as aliases),
 * resolves the host and, for TLS, makes the OpenSSL context (peer verification
 * only with tls_verify, so that self-signed test servers work). Returns 0 or -1. */
int lt_net_target_init(struct lt_net_target *t, const char *url, int tls_verify, char *err,
                       size_t err_len);
void lt_net_target_free(struct lt_net_target *t);

/* Opens a non-blocking socket and starts connecting (TCP_NODELAY set: latency is
 * what we measure). Returns 0 (connected or in progress) or -1. */
int lt_net_connect(const struct lt_net_target *t, struct lt_net_conn *c, char *err, size_t err_len);
/* After the socket turned writable: 0 when the connect succeeded, -1 otherwise. */
int lt_net_connected(struct lt_net_conn *c, char *err, size_t err_len);
/* Starts TLS on a connected socket; then call lt_net_tls_step on every event
 * until it returns 1 (done); 0 means in progress, -1 failed. */
int lt_net_tls_begin(const struct lt_net_target *t, struct lt_net_conn *c, char *err,
                     size_t err_len);
int lt_net_tls_step(struct lt_net_conn *c, char *err, size_t err_len);
/* Returns bytes written (0 when the socket is full for now) or -1 on failure. */
ssize_t lt_net_write(struct lt_net_conn *c, const void *p, size_t n, char *err, size_t err_len);
/* Returns bytes read, 0 when nothing is available now, -1 when the stream ended
 * (c->eof set for an orderly end) or failed. */
ssize_t lt_net_read(struct lt_net_conn *c, void *p, size_t n, char *err, size_t err_len);
/* Frees TLS state and closes the socket; safe twice. */
void lt_net_close(struct lt_net_conn *c);

#endif
