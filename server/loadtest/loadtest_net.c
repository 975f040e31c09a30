/* loadtest_net: URL resolution, non-blocking TCP and OpenSSL TLS for the load
 * tester's connections (see the header). */
#include "loadtest_net.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static void net_err(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void net_err(char *err, size_t err_len, const char *fmt, ...)
{
    if (err[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

int lt_net_target_init(struct lt_net_target *t, const char *url, int tls_verify, char *err,
                       size_t err_len)
{
    memset(t, 0, sizeof *t);
    const char *p, *dflt_port;
    if (!strncasecmp(url, "ws://", 5) || !strncasecmp(url, "http://", 7)) {
        dflt_port = "80";
    } else if (!strncasecmp(url, "wss://", 6) || !strncasecmp(url, "https://", 8)) {
        dflt_port = "443";
        t->tls = 1;
    } else {
        net_err(err, err_len, "URL must start with ws:// or wss://: %.200s", url);
        return -1;
    }
    p = strstr(url, "//") + 2;
    const char *slash = strchr(p, '/');
    size_t auth_len = slash ? (size_t)(slash - p) : strlen(p);
    snprintf(t->path, sizeof t->path, "%s", slash ? slash : "/");
    if (auth_len == 0 || auth_len >= sizeof t->host) {
        net_err(err, err_len, "bad host in URL: %.200s", url);
        return -1;
    }
    memcpy(t->host_hdr, p, auth_len);
    t->host_hdr[auth_len] = 0;

    /* Split host and port; an IPv6 literal is bracketed. */
    char port[16];
    snprintf(port, sizeof port, "%s", dflt_port);
    const char *hs = t->host_hdr, *colon;
    size_t hlen;
    if (hs[0] == '[') {
        const char *close = strchr(hs, ']');
        if (!close) {
            net_err(err, err_len, "bad IPv6 host in URL: %.200s", url);
            return -1;
        }
        hlen = (size_t)(close - hs - 1);
        memcpy(t->host, hs + 1, hlen);
        colon = close[1] == ':' ? close + 1 : NULL;
    } else {
        colon = strrchr(hs, ':');
        hlen = colon ? (size_t)(colon - hs) : strlen(hs);
        memcpy(t->host, hs, hlen);
    }
    t->host[hlen] = 0;
    if (colon) {
        if (!colon[1] || strlen(colon + 1) >= sizeof port) {
            net_err(err, err_len, "bad port in URL: %.200s", url);
            return -1;
        }
        snprintf(port, sizeof port, "%s", colon + 1);
    }

    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res;
    int rc = getaddrinfo(t->host, port, &hints, &res);
    if (rc) {
        net_err(err, err_len, "cannot resolve %s: %s", t->host, gai_strerror(rc));
        return -1;
    }
    memcpy(&t->addr, res->ai_addr, res->ai_addrlen);
    t->addr_len = res->ai_addrlen;
    freeaddrinfo(res);

    if (t->tls) {
        t->ssl_ctx = SSL_CTX_new(TLS_client_method());
        if (!t->ssl_ctx) {
            net_err(err, err_len, "SSL_CTX_new failed");
            return -1;
        }
        /* Thousands of idle connections: drop per-connection buffers when idle.
         * Partial writes, because our output buffer moves as it is compacted. */
        SSL_CTX_set_mode(t->ssl_ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                                         SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        if (tls_verify) {
            SSL_CTX_set_verify(t->ssl_ctx, SSL_VERIFY_PEER, NULL);
            SSL_CTX_set_default_verify_paths(t->ssl_ctx);
        } else {
            SSL_CTX_set_verify(t->ssl_ctx, SSL_VERIFY_NONE, NULL);
        }
    }
    return 0;
}

void lt_net_target_free(struct lt_net_target *t)
{
    if (t->ssl_ctx) SSL_CTX_free(t->ssl_ctx);
    t->ssl_ctx = NULL;
}

int lt_net_connect(const struct lt_net_target *t, struct lt_net_conn *c, char *err, size_t err_len)
{
    memset(c, 0, sizeof *c);
    c->fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        net_err(err, err_len, "socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (const struct sockaddr *)&t->addr, t->addr_len) && errno != EINPROGRESS) {
        net_err(err, err_len, "connect: %s", strerror(errno));
        return -1;
    }
    return 0;
}

int lt_net_connected(struct lt_net_conn *c, char *err, size_t err_len)
{
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) || soerr) {
        net_err(err, err_len, "connect: %s", strerror(soerr ? soerr : errno));
        return -1;
    }
    return 0;
}

int lt_net_tls_begin(const struct lt_net_target *t, struct lt_net_conn *c, char *err,
                     size_t err_len)
{
    c->ssl = SSL_new(t->ssl_ctx);
    if (!c->ssl || !SSL_set_fd(c->ssl, c->fd)) {
        net_err(err, err_len, "SSL_new failed");
        return -1;
    }
    SSL_set_tlsext_host_name(c->ssl, t->host);
    SSL_set1_host(c->ssl, t->host);
    SSL_set_connect_state(c->ssl);
    return 0;
}

int lt_net_tls_step(struct lt_net_conn *c, char *err, size_t err_len)
{
    ERR_clear_error();
    int r = SSL_connect(c->ssl);
    c->wants_write = 0;
    if (r == 1) return 1;
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) return 0;
    if (e == SSL_ERROR_WANT_WRITE) {
        c->wants_write = 1;
        return 0;
    }
    char buf[120];
    ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
    net_err(err, err_len, "TLS handshake failed: %s", buf);
    return -1;
}

ssize_t lt_net_write(struct lt_net_conn *c, const void *p, size_t n, char *err, size_t err_len)
{
    if (c->ssl) {
        ERR_clear_error();
        int r = SSL_write(c->ssl, p, n > (1u << 30) ? 1 << 30 : (int)n);
        c->wants_write = 0;
        if (r > 0) return r;
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_WRITE) {
            c->wants_write = 1;
            return 0;
        }
        if (e == SSL_ERROR_WANT_READ) return 0;
        net_err(err, err_len, "TLS write failed");
        return -1;
    }
    ssize_t r = send(c->fd, p, n, MSG_NOSIGNAL);
    if (r >= 0) return r;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
    net_err(err, err_len, "send: %s", strerror(errno));
    return -1;
}

ssize_t lt_net_read(struct lt_net_conn *c, void *p, size_t n, char *err, size_t err_len)
{
    if (c->ssl) {
        ERR_clear_error();
        int r = SSL_read(c->ssl, p, n > (1u << 30) ? 1 << 30 : (int)n);
        if (r > 0) return r;
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ) return 0;
        if (e == SSL_ERROR_WANT_WRITE) {
            c->wants_write = 1;
            return 0;
        }
        if (e == SSL_ERROR_ZERO_RETURN) {
            c->eof = 1;
            net_err(err, err_len, "connection closed by the server");
        } else {
            net_err(err, err_len, "TLS read failed");
        }
        return -1;
    }
    ssize_t r = recv(c->fd, p, n, 0);
    if (r > 0) return r;
    if (r == 0) {
        c->eof = 1;
        net_err(err, err_len, "connection closed by the server");
        return -1;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
    net_err(err, err_len, "recv: %s", strerror(errno));
    return -1;
}

void lt_net_close(struct lt_net_conn *c)
{
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
}
