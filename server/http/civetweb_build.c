/* civetweb_build: compiles CivetWeb (from Debian's source package, see scripts/deps.sh)
 * into our binary and adds what its API lacks: the socket of a connection, so another
 * thread can shut a stalled client down (shutdown(2) makes CivetWeb's own read loop
 * end and run the close handler) and poll it for space; and limits on inbound frames
 * (scripts/civetweb.patch): a frame larger than the largest message is refused from
 * its header, before CivetWeb allocates its payload, and a frame must arrive within a
 * deadline once it has started. */
#include <stddef.h>
#include <stdint.h>

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

int mg_connection_socket(const struct mg_connection *conn)
{
    return (int)conn->client.sock;
}

void mg_zw_set_ws_limits(size_t max_frame, unsigned frame_timeout_ms)
{
    zw_ws_max_frame = max_frame;
    zw_ws_frame_timeout_ms = frame_timeout_ms;
}
