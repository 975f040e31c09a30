/* wsdeflate: permessage-deflate (RFC 7692) for a server that uses no context
 * takeover in either direction, so no compression state lives per connection.
 *
 * Negotiation is a pure function over the request header. Compression and
 * decompression use a per-THREAD context (one per reading or sending thread, never
 * per connection) that is reset before every message: each message is compressed
 * and inflated on its own, exactly as "no context takeover" requires.
 *
 * Choices, measured with zlib 1.2.13 on Zwibbler-like messages: an APPEND header and
 * JSON changes (cursor moves, property sets, text and path nodes) made by a throwaway
 * generator, 300 messages per small class; 1-64 KB messages are runs of changes as in
 * a document load. Compressed size as % of the input, and CPU time per message (best
 * of 7 runs; the machine was heavily loaded, so compare rather than read absolutely):
 *
 *   message      level 1          level 4          level 6
 *   0-63 B       84%   2.9 us     84%   2.8 us     84%   2.9 us
 *   64-127 B     84%   4.8 us     84%   5.1 us     84%   5.3 us
 *   128-255 B    74%   8.5 us     74%   9.0 us     74%   9.9 us
 *   256-511 B    56%  10.9 us     55%  11.5 us     54%  13.3 us
 *   1 KB         43%  19.0 us     41%  21.3 us     40%  24.3 us
 *   4 KB         33%  43   us     30%  58   us     28%  83   us
 *   64 KB        29%  515  us     25%  740  us     22%  1795 us
 *
 * - Level 1 (WS_DEFLATE_LEVEL): on the messages a session is made of (under 512 B)
 *   every level compresses within 2 points of the others, so the cheapest wins; on
 *   document-sized ones higher levels save 3-7 points for 1.4-3.5 times the CPU.
 *   gorilla/websocket, a common Go server library, defaults to the same level.
 * - Threshold (WS_DEFLATE_MIN_SIZE = 128 bytes): under it a message shrinks by 5-18
 *   bytes (mean), little beside the 50-90 bytes of TCP/IP (and TLS) framing every
 *   message costs anyway, for a deflate on our side and an inflate on each client's;
 *   from 128 bytes it saves 15-30% of the payload, and about half from 512 on.
 * - windowBits 15 (WS_DEFLATE_WINDOW_BITS), memLevel 7 (WS_DEFLATE_MEM_LEVEL): no
 *   difference in size between memLevel 7 and zlib's default 8 on these messages,
 *   while 7 halves the hash table that every per-message reset clears. A smaller
 *   window gained nothing measurable either, and 15 is what clients assume unless
 *   they ask otherwise. A thread's deflate state is about 200 KB (window 64 KB,
 *   chain 64 KB, hash 32 KB, pending symbols 32 KB); its inflate state about 40 KB
 *   (a 32 KB window: clients may use any window size). Each is allocated on first
 *   use, so a thread that only reads (or only sends) never holds the other.
 */
#ifndef ZW_WSDEFLATE_H
#define ZW_WSDEFLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WS_DEFLATE_LEVEL 1
#define WS_DEFLATE_WINDOW_BITS 15
#define WS_DEFLATE_MEM_LEVEL 7
/* Payloads shorter than this are best sent uncompressed (see above). */
#define WS_DEFLATE_MIN_SIZE 128u

/* Room for the longest response ws_deflate_negotiate writes, with its NUL. */
#define WS_DEFLATE_RESPONSE_MAX 160u

/* What the server answers to one permessage-deflate offer. */
struct ws_deflate_offer {
    bool accepted;
    /* Window sizes to state in the response, 8..15, or 0 to leave them out. The
     * server inflates with a 32 KB window, so it never limits the client's window:
     * client_max_window_bits is always 0. server_max_window_bits is echoed when the
     * offer asked for it (only 15 can be honoured, see ws_deflate_negotiate). */
    int client_max_window_bits;
    int server_max_window_bits;
};

/* Parses a Sec-WebSocket-Extensions request header value (several extensions or
 * offers, comma separated; parameters with optional token or quoted-string values;
 * names compared case-insensitively; several header lines may be joined with ", ")
 * and picks the first acceptable permessage-deflate offer. An offer is refused when a
 * parameter is unknown, repeated, malformed, has a value it must not have or lacks
 * one it needs, or when it sets server_max_window_bits below 15 (the server's single
 * compressed copy of a message is made with a 32 KB window). A malformed element
 * only spoils itself: parsing resumes after the next comma outside quotes.
 *
 * On acceptance writes the response header VALUE into resp, e.g.
 * "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
 * and returns 1. Returns 0 (resp = "" when resp_len > 0) when nothing was offered,
 * no offer is acceptable, or resp_len is below what the answer needs
 * (WS_DEFLATE_RESPONSE_MAX always suffices). header may be NULL. */
int ws_deflate_negotiate(const char *header, char *resp, size_t resp_len);

/* The same choice, as a struct rather than text (*offer is zeroed when refused). */
int ws_deflate_choose(const char *header, struct ws_deflate_offer *offer);
/* The response header value for an accepted offer; returns its length, or 0 (and
 * resp = "" when resp_len > 0) when it does not fit in resp_len with its NUL. */
size_t ws_deflate_response(const struct ws_deflate_offer *offer, char *resp, size_t resp_len);

/* Per-THREAD state (one per reading or sending thread, never per connection). Not
 * safe to share between threads; cheap to create (zlib state comes on first use). */
struct ws_deflate_ctx;
struct ws_deflate_ctx *ws_deflate_ctx_new(void);    /* NULL on OOM */
void ws_deflate_ctx_free(struct ws_deflate_ctx *z); /* NULL is fine */

/* Compresses one whole message payload: raw deflate at WS_DEFLATE_LEVEL, flushed with
 * an empty stored block whose 00 00 ff ff is then removed (RFC 7692 §7.2.1), from a
 * fresh context every time. Returns 0 with *out (malloc'd, the caller frees) and
 * *out_len, or -1 on OOM (*out NULL). The caller decides whether it is worth sending
 * compressed (WS_DEFLATE_MIN_SIZE, and *out_len < len). */
int ws_deflate_message(struct ws_deflate_ctx *z, const uint8_t *in, size_t len, uint8_t **out,
                       size_t *out_len);

enum {
    WS_INFLATE_TOO_BIG = -2, /* the message inflates to more than max_out bytes */
    WS_INFLATE_CORRUPT = -3, /* not a valid compressed message */
};

/* Inflates one message payload (appending the 00 00 ff ff tail itself) with a fresh
 * context. Never produces more than max_out bytes: it stops as soon as the output
 * would pass max_out and returns WS_INFLATE_TOO_BIG, so a compression bomb costs at
 * most max_out + 1 bytes of output buffer besides the context's fixed state.
 * Returns 0 with *out (malloc'd, never NULL, even for an empty message; the caller
 * frees) and *out_len; WS_INFLATE_TOO_BIG; WS_INFLATE_CORRUPT (a bad stream, one
 * that stops inside a block, or bytes after a final block other than the single
 * 0x00 of RFC 7692 §7.2.3.4); or -1 on OOM. An empty payload inflates to an empty
 * message (strictly it is an incomplete stream; some senders emit it). */
int ws_inflate_message(struct ws_deflate_ctx *z, const uint8_t *in, size_t len, size_t max_out,
                       uint8_t **out, size_t *out_len);

/* The most bytes this context has held at once (zlib state plus the output buffer of
 * the call in progress) since it was created: for tests and metrics. */
size_t ws_deflate_ctx_peak(const struct ws_deflate_ctx *z);

#endif
