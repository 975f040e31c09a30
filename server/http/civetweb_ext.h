/* civetweb_ext: what civetweb_build.c adds to CivetWeb's API (it compiles CivetWeb
 * into our library, so it can reach a connection's internals). */
#ifndef ZW_CIVETWEB_EXT_H
#define ZW_CIVETWEB_EXT_H

#include <stddef.h>

struct mg_connection;

/* A connection taken from CivetWeb. `early` points into CivetWeb's buffer (bytes the
 * client sent after its upgrade request) and is valid until the handler returns. */
struct mg_zw_detached {
    int fd;
    void *ssl; /* SSL *, or NULL */
    const char *early;
    size_t early_len;
};

/* Takes the socket and TLS session of `conn`, whose handshake answer has been
 * written: CivetWeb will neither read, write nor close them again. Call from a
 * WebSocket connect handler that then returns non-zero. */
void mg_zw_detach(struct mg_connection *conn, struct mg_zw_detached *out);

#endif
