/* civetweb_ext: what server/http/civetweb_build.c adds to CivetWeb's API (see there
 * and scripts/civetweb.patch). Internal to the server: libzwibbler.a does not export
 * these. */
#ifndef ZW_CIVETWEB_EXT_H
#define ZW_CIVETWEB_EXT_H

#include <stddef.h>

struct mg_connection;

/* The connection's socket, so another thread can shutdown(2) a stalled client (which
 * ends CivetWeb's read loop and runs the close handler) and poll it for space. */
int mg_connection_socket(const struct mg_connection *conn);

/* Limits on inbound WebSocket frames: a frame larger than max_frame is refused from
 * its header, before its payload is allocated; a started frame must arrive within
 * frame_timeout_ms plus about 1 s per 16 KiB. Call before mg_start: worker threads read
 * them without a lock. */
void mg_zw_set_ws_limits(size_t max_frame, unsigned frame_timeout_ms);

#endif
