/* redis_events: encoding and decoding of the cluster's events (redis_events.h). */
#include "redis_events.h"

#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "redis_link.h"

char *redis_event_channel(const char *doc, size_t doc_len, size_t *len)
{
    if (!doc) return redis_key(REDIS_EV_GLOBAL, "", 0, len);
    return redis_key(REDIS_EV_CHANNEL, doc, doc_len, len);
}

uint8_t *redis_event_encode(const struct redis_event *ev, size_t *len)
{
    size_t n = 1;
    switch (ev->kind) {
    case REDIS_EV_APPEND: n += 8; break;
    case REDIS_EV_BROADCAST: n += 16 + ev->data_len; break;
    case REDIS_EV_CLIENT_KEY: n += 24 + ev->name_len + ev->data_len; break;
    case REDIS_EV_KEY_REMOVED: n += 16; break;
    case REDIS_EV_SESSION_KEY: n += 20 + ev->name_len; break;
    case REDIS_EV_DELETED: n += 8; break;
    case REDIS_EV_DOC_ACTIVE: n += ev->doc_len; break;
    case REDIS_EV_USER: n += 12 + ev->name_len + ev->data_len; break;
    default: return NULL;
    }
    uint8_t *m = malloc(n), *p = m;
    if (!m) return NULL;
    *p++ = (uint8_t)ev->kind;
    switch (ev->kind) {
    case REDIS_EV_APPEND: be_put64(p, ev->offset); break;
    case REDIS_EV_DOC_ACTIVE:
        if (ev->doc_len) memcpy(p, ev->doc, ev->doc_len);
        break;
    case REDIS_EV_DELETED: be_put64(p, ev->server); break;
    case REDIS_EV_USER:
        be_put64(p, ev->server);
        be_put32(p + 8, (uint32_t)ev->name_len);
        if (ev->name_len) memcpy(p + 12, ev->name, ev->name_len);
        if (ev->data_len) memcpy(p + 12 + ev->name_len, ev->data, ev->data_len);
        break;
    default: /* server, client, then the kind's fields */
        be_put64(p, ev->server);
        be_put64(p + 8, ev->client);
        p += 16;
        if (ev->kind == REDIS_EV_BROADCAST) {
            if (ev->data_len) memcpy(p, ev->data, ev->data_len);
        } else if (ev->kind == REDIS_EV_CLIENT_KEY) {
            be_put32(p, ev->version);
            be_put32(p + 4, (uint32_t)ev->name_len);
            memcpy(p + 8, ev->name, ev->name_len);
            if (ev->data_len) memcpy(p + 8 + ev->name_len, ev->data, ev->data_len);
        } else if (ev->kind == REDIS_EV_SESSION_KEY) {
            be_put32(p, ev->version);
            memcpy(p + 4, ev->name, ev->name_len);
        }
    }
    *len = n;
    return m;
}

int redis_event_decode(const char *chan, size_t chan_len, const uint8_t *p, size_t len,
                       struct redis_event *ev)
{
    size_t plen = strlen(REDIS_EV_CHANNEL);
    memset(ev, 0, sizeof *ev);
    if (len < 1) return -1;
    ev->kind = (enum redis_event_kind)p[0];
    if (chan_len >= plen && !memcmp(chan, REDIS_EV_CHANNEL, plen)) {
        ev->doc = chan + plen;
        ev->doc_len = chan_len - plen;
    } else if (chan_len == strlen(REDIS_EV_GLOBAL) && !memcmp(chan, REDIS_EV_GLOBAL, chan_len)) {
        if (ev->kind == REDIS_EV_DOC_ACTIVE && len > 1) {
            ev->doc = (const char *)p + 1;
            ev->doc_len = len - 1;
            return 0;
        }
        if (ev->kind == REDIS_EV_USER && len >= 13) {
            uint32_t ulen = be_get32(p + 9);
            if (ulen > len - 13) return -1;
            ev->server = be_get64(p + 1);
            ev->name = p + 13;
            ev->name_len = ulen;
            ev->data = p + 13 + ulen;
            ev->data_len = len - 13 - ulen;
            return 0;
        }
        return -1;
    } else {
        return -1;
    }
    switch (ev->kind) {
    case REDIS_EV_APPEND:
        if (len < 9) return -1;
        ev->offset = be_get64(p + 1);
        ev->data = p + 9;
        ev->data_len = len - 9;
        return 0;
    case REDIS_EV_DELETED:
        if (len < 9) return -1;
        ev->server = be_get64(p + 1);
        return 0;
    case REDIS_EV_BROADCAST:
    case REDIS_EV_CLIENT_KEY:
    case REDIS_EV_KEY_REMOVED:
    case REDIS_EV_SESSION_KEY: break;
    default: return -1;
    }
    if (len < 17) return -1;
    ev->server = be_get64(p + 1);
    ev->client = be_get64(p + 9);
    p += 17, len -= 17;
    if (ev->kind == REDIS_EV_BROADCAST) {
        ev->data = p;
        ev->data_len = len;
    } else if (ev->kind == REDIS_EV_SESSION_KEY) {
        if (len < 4) return -1;
        ev->version = be_get32(p);
        ev->name = p + 4;
        ev->name_len = len - 4;
    } else {
        if (len < 8) return -1;
        uint32_t nlen = be_get32(p + 4);
        if (nlen > len - 8) return -1;
        ev->version = be_get32(p);
        ev->name = p + 8;
        ev->name_len = nlen;
        ev->data = p + 8 + nlen;
        ev->data_len = len - 8 - nlen;
    }
    return 0;
}
