/* framer: owns the layout of outgoing frames (framer.h) and the compressed variants of
 * messages (message.h), built once and shared by every client that uses them. */
#include "framer.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "message.h"
#include "wsdeflate.h"
#include "wsframe.h"

static void add_iov(struct framer *f, const uint8_t *p, size_t len, size_t skip)
{
    if (skip < len)
        f->iov[f->niov++] = (struct iovec){ .iov_base = (void *)(p + skip), .iov_len = len - skip };
}

/* Adds one frame (header h of hl bytes, then body) that starts at framed offset `pos`
 * of its message, skipping what lies before `skip`. Returns the frame's end. */
static size_t add_frame(struct framer *f, const uint8_t *h, size_t hl, const uint8_t *body,
                        size_t body_len, size_t pos, size_t skip, size_t *reached)
{
    size_t end = pos + hl + body_len;
    if (end > skip && f->nframes < FRAMER_MAX_FRAMES) {
        size_t from = skip > pos ? skip - pos : 0;
        uint8_t *dst = f->hdr[f->nframes++];
        memcpy(dst, h, hl);
        add_iov(f, dst, hl, from);
        add_iov(f, body, body_len, from > hl ? from - hl : 0);
        *reached = end;
    }
    return end;
}

/* Builds m's pieces for split size `max`, each compressed when that is smaller.
 * Returns NULL when memory ran out. */
static struct message_variant *build_variant(const struct message *m, uint32_t max,
                                             struct ws_deflate_ctx *z)
{
    size_t npieces = codec_split_count(m->len, max);
    bool split = npieces > 1;
    uint8_t **out = calloc(npieces, sizeof *out);
    size_t *out_len = calloc(npieces, sizeof *out_len);
    bool *raw = calloc(npieces, sizeof *raw);
    uint8_t *joined = split ? malloc(2 + (max > m->len ? m->len : max)) : NULL;
    struct message_variant *v = NULL;
    if (!out || !out_len || !raw || (split && !joined)) goto done;
    size_t total = 0;
    for (size_t k = 0; k < npieces; k++) {
        const uint8_t *in = m->data;
        size_t in_len = m->len;
        if (split) { /* a piece is its two header bytes, then its body */
            struct codec_piece p;
            codec_split_piece(m->data, m->len, max, k, &p);
            memcpy(joined, p.hdr, 2);
            memcpy(joined + 2, p.body, p.body_len);
            in = joined;
            in_len = 2 + p.body_len;
        }
        if (ws_deflate_message(z, in, in_len, &out[k], &out_len[k])) goto done;
        if (out_len[k] >= in_len) { /* not worth it: the piece goes as it is */
            free(out[k]);
            out[k] = malloc(in_len ? in_len : 1);
            if (!out[k]) goto done;
            memcpy(out[k], in, in_len);
            out_len[k] = in_len;
            raw[k] = true;
        }
        total += out_len[k];
    }
    v = malloc(sizeof *v + npieces * sizeof *v->pieces + total);
    if (!v) goto done;
    v->next = NULL;
    v->max_message = max;
    v->npieces = npieces;
    v->pieces = (struct message_piece *)(v + 1);
    v->bytes = (uint8_t *)(v->pieces + npieces);
    size_t off = 0;
    for (size_t k = 0; k < npieces; k++) {
        memcpy(v->bytes + off, out[k], out_len[k]);
        v->pieces[k] =
            (struct message_piece){ .off = off, .len = out_len[k], .compressed = !raw[k] };
        off += out_len[k];
    }
done:
    for (size_t k = 0; out && k < npieces; k++) free(out[k]);
    free(out);
    free(out_len);
    free(raw);
    free(joined);
    return v;
}

/* The shared variant of m for split size `max`, built on first use. Two loops may
 * build one at once: the first published wins and the other is dropped. */
static const struct message_variant *variant_of(struct message *m, uint32_t max,
                                                struct ws_deflate_ctx *z)
{
    struct message_variant *head = atomic_load_explicit(&m->variants, memory_order_acquire);
    for (struct message_variant *v = head; v; v = v->next)
        if (v->max_message == max) return v;
    struct message_variant *mine = build_variant(m, max, z);
    if (!mine) return NULL;
    for (;;) {
        mine->next = head;
        if (atomic_compare_exchange_weak_explicit(&m->variants, &head, mine, memory_order_acq_rel,
                                                  memory_order_acquire))
            return mine;
        for (struct message_variant *v = head; v; v = v->next)
            if (v->max_message == max) {
                free(mine);
                return v;
            }
    }
}

/* Adds iovecs for message m's framed bytes from `skip` on, as many frames as f holds.
 * Returns the framed offset reached (skip when nothing fitted), or (size_t)-1 when
 * memory ran out; *total gets the framed size. */
static size_t add_message(struct framer *f, struct message *m, const struct framer_client *fc,
                          size_t skip, size_t *total)
{
    uint8_t h[12];
    size_t reached = skip;
    if (m->raw_frame) {
        *total = add_frame(f, h, 0, m->data, m->len, 0, skip, &reached);
        return reached;
    }
    uint32_t max = fc->max_message ? fc->max_message : CODEC_DEFAULT_MAX_MESSAGE;
    if (fc->z && m->len >= fc->min_compress) {
        const struct message_variant *v = variant_of(m, max, fc->z);
        if (!v) return (size_t)-1;
        size_t pos = 0;
        for (size_t k = 0; k < v->npieces; k++) {
            const struct message_piece *p = &v->pieces[k];
            size_t hl = ws_frame_header(h, WS_OP_BINARY, p->compressed, p->len);
            pos = add_frame(f, h, hl, v->bytes + p->off, p->len, pos, skip, &reached);
        }
        *total = pos;
        return reached;
    }
    size_t pieces = codec_split_count(m->len, max), pos = 0;
    bool split = pieces > 1;
    for (size_t k = 0; k < pieces; k++) {
        struct codec_piece p = { .body = m->data, .body_len = m->len };
        if (split) codec_split_piece(m->data, m->len, max, k, &p);
        size_t hl = ws_frame_header(h, WS_OP_BINARY, false, p.body_len + (split ? 2 : 0));
        if (split) memcpy(h + hl, p.hdr, 2), hl += 2;
        pos = add_frame(f, h, hl, p.body, p.body_len, pos, skip, &reached);
    }
    *total = pos;
    return reached;
}

int framer_fill(struct framer *f, struct message *const *slots, size_t i, size_t n, size_t off,
                const struct framer_client *fc)
{
    f->niov = f->nframes = f->nseg = 0;
    for (size_t j = i, o = off; j < n && f->nframes < FRAMER_MAX_FRAMES;) {
        size_t total;
        /* Slots carry the exemption in their low bit (outq.h). */
        struct message *m = (struct message *)((uintptr_t)slots[j] & ~(uintptr_t)1);
        size_t reached = add_message(f, m, fc, o, &total);
        if (reached == (size_t)-1) return -1;
        f->seg[f->nseg++] = (struct framer_segment){
            .msg = j, .start = o, .end = reached, .last = reached == total
        };
        if (reached < total) break; /* f is full inside this message */
        j++;
        o = 0;
    }
    return 0;
}

void framer_advance(const struct framer *f, size_t sent, size_t *i, size_t *off)
{
    for (int k = 0; k < f->nseg; k++) {
        const struct framer_segment *g = &f->seg[k];
        size_t len = g->end - g->start;
        if (sent < len) {
            *i = g->msg;
            *off = g->start + sent;
            return;
        }
        sent -= len;
        *i = g->last ? g->msg + 1 : g->msg;
        *off = g->last ? 0 : g->end;
    }
}

size_t framer_bytes(const struct framer *f)
{
    size_t n = 0;
    for (int k = 0; k < f->niov; k++) n += f->iov[k].iov_len;
    return n;
}
