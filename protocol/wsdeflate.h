/* wsdeflate: permessage-deflate (RFC 7692) for a server that keeps no compression
 * context between messages in either direction: the offer is answered with
 * server_no_context_takeover and client_no_context_takeover, so each message is
 * compressed on its own — once, whatever the number of clients it goes to — and no
 * zlib state lives with a connection. State belongs to the thread that uses it.
 *
 * Measured on Zwibbler-like JSON (shapes with points and styles): level 1 keeps
 * 80-90 % of level 6's saving at a third of its time; messages under
 * WS_DEFLATE_MIN_BYTES rarely shrink by more than their frame header and are sent
 * as they are. */
#ifndef ZW_WSDEFLATE_H
#define ZW_WSDEFLATE_H

#include <stddef.h>
#include <stdint.h>

#define WS_DEFLATE_LEVEL 1
#define WS_DEFLATE_MIN_BYTES 128

enum { WS_INFLATE_TOO_BIG = -2, WS_INFLATE_CORRUPT = -3 };

/* Reads a Sec-WebSocket-Extensions request value (several extensions and offers, comma
 * separated; parameters after ';', values bare or quoted) and takes the first
 * permessage-deflate offer it can honour: no unknown or repeated parameter, no
 * server_max_window_bits below 15 (a message compressed once is shared by clients,
 * so every one of them must accept the same window). Writes the response value into
 * resp. Returns 1 when accepted, 0 otherwise (resp then empty). */
int ws_deflate_negotiate(const char *header, char *resp, size_t resp_len);

struct ws_deflate_ctx;
/* One per thread that compresses or inflates. NULL when out of memory. */
struct ws_deflate_ctx *ws_deflate_ctx_new(void);
void ws_deflate_ctx_free(struct ws_deflate_ctx *z);

/* Compresses one message payload on its own (raw deflate, the trailing 00 00 ff ff
 * removed). *out is malloc'd; the caller decides whether it is worth sending (smaller
 * than the input). Returns 0, or -1 when memory ran out. */
int ws_deflate_message(struct ws_deflate_ctx *z, const uint8_t *in, size_t len, uint8_t **out,
                       size_t *out_len);

/* Inflates one message (adding the 00 00 ff ff tail itself). Stops as soon as the
 * output would pass max_out: a decompression bomb costs at most max_out bytes.
 * Returns 0 with *out malloc'd, WS_INFLATE_TOO_BIG, WS_INFLATE_CORRUPT (not a deflate
 * stream, or bytes after its end), or -1 when memory ran out. */
int ws_inflate_message(struct ws_deflate_ctx *z, const uint8_t *in, size_t len, size_t max_out,
                       uint8_t **out, size_t *out_len);

#endif
