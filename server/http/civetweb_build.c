/* civetweb_build: compiles CivetWeb (from Debian's source package, see scripts/deps.sh)
 * into our library and adds what its API lacks: taking an upgraded connection's socket
 * and TLS session away from CivetWeb (mg_zw_detach), so that the connection layer
 * owns every open WebSocket and CivetWeb's worker goes back to its pool. The limits on
 * inbound frames (scripts/civetweb.patch) only matter to a WebSocket CivetWeb would
 * read itself, which ours never do. */
#include <stddef.h>
#include <stdint.h>

#include "civetweb_ext.h"

/* Written once by mg_zw_set_ws_limits before mg_start2 creates the worker threads. */
static size_t zw_ws_max_frame = 0x7FFF0000u;
static uint64_t zw_ws_frame_timeout_ms = 30000;

/* A frame of len bytes gets the base timeout plus 1 s per 16 KiB: slow but honest
 * links still get a 16 MiB message through, a trickle does not last forever. */
#define MG_WS_MAX_FRAME(conn) (zw_ws_max_frame)
#define MG_WS_FRAME_TIMEOUT_MS(conn, len) (zw_ws_frame_timeout_ms + (uint64_t)(len) / 16u)

#include "civetweb.c"

#if !defined(ZW_CIVETWEB_PATCHED)
#error "build/civetweb lacks scripts/civetweb.patch: run scripts/deps.sh"
#endif

/* CivetWeb closes a connection by its socket and SSL fields: emptied here, its
 * close_connection finds nothing to shut down or free, and the worker thread returns
 * to the pool while the connection lives on with its new owner. */
void mg_zw_detach(struct mg_connection *conn, struct mg_zw_detached *out)
{
    out->fd = (int)conn->client.sock;
    out->ssl = conn->ssl;
    int buffered = conn->data_len - conn->request_len - (int)conn->consumed_content;
    out->early = buffered > 0 ? conn->buf + conn->request_len + conn->consumed_content : NULL;
    out->early_len = buffered > 0 ? (size_t)buffered : 0;
    conn->client.sock = INVALID_SOCKET;
    conn->ssl = NULL;
    conn->must_close = 1;
}

void mg_zw_set_ws_limits(size_t max_frame, unsigned frame_timeout_ms)
{
    zw_ws_max_frame = max_frame;
    zw_ws_frame_timeout_ms = frame_timeout_ms;
}
