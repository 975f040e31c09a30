/* redis_keyjson: the reference's key JSON, both ways (redis_keyjson.h). */
#include "redis_keyjson.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Go's encoding/json string escaping: ", \, control characters, <, >, & and U+2028/9
 * escaped. Go would replace invalid UTF-8 with U+FFFD; we keep such bytes as they are
 * so that a value round-trips through our own server unchanged. */
static size_t utf8_len(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4, cp = c & 0x07;
    else
        return 0;
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return len;
}

static char *json_string(char *o, const uint8_t *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    *o++ = '"';
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        if (c >= 0x80) {
            size_t l = utf8_len(s + i, n - i);
            if (l == 3 && s[i] == 0xe2 && s[i + 1] == 0x80 &&
                (s[i + 2] == 0xa8 || s[i + 2] == 0xa9)) {
                memcpy(o, s[i + 2] == 0xa8 ? "\\u2028" : "\\u2029", 6);
                o += 6;
            } else if (l) {
                memcpy(o, s + i, l);
                o += l;
            } else {
                *o++ = (char)c;
                l = 1;
            }
            i += l;
            continue;
        }
        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
        } else if (c == '\n') {
            *o++ = '\\', *o++ = 'n';
        } else if (c == '\r') {
            *o++ = '\\', *o++ = 'r';
        } else if (c == '\t') {
            *o++ = '\\', *o++ = 't';
        } else if (c < 0x20 || c == '<' || c == '>' || c == '&') {
            memcpy(o, "\\u00", 4);
            o[4] = hex[c >> 4];
            o[5] = hex[c & 15];
            o += 6;
        } else {
            *o++ = (char)c;
        }
        i++;
    }
    *o++ = '"';
    return o;
}

/* {"Version":n,"Name":"…","Value":"…"}, as the reference's json.Marshal(Key). */
char *redis_key_json(uint32_t version, const uint8_t *name, size_t name_len, const uint8_t *value,
                     size_t value_len, size_t *out_len)
{
    char *buf = malloc(64 + 6 * (name_len + value_len));
    if (!buf) return NULL;
    char *o = buf + sprintf(buf, "{\"Version\":%" PRIu32 ",\"Name\":", version);
    o = json_string(o, name, name_len);
    memcpy(o, ",\"Value\":", 9);
    o = json_string(o + 9, value, value_len);
    *o++ = '}';
    *o = 0;
    *out_len = (size_t)(o - buf);
    return buf;
}

/* A small JSON reader for the key objects: cJSON cannot return strings holding NUL,
 * which a key value may. Field names match case-insensitively, as Go's decoder does. */
struct jr {
    const char *p, *end;
};

static void jr_ws(struct jr *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool jr_hex4(struct jr *j, uint32_t *v)
{
    if (j->end - j->p < 4) return false;
    *v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(j->p[i]);
        if (h < 0) return false;
        *v = *v << 4 | (uint32_t)h;
    }
    j->p += 4;
    return true;
}

static char *put_utf8(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        *o++ = (char)cp;
    } else if (cp < 0x800) {
        *o++ = (char)(0xc0 | cp >> 6);
        *o++ = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        *o++ = (char)(0xe0 | cp >> 12);
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *o++ = (char)(0x80 | (cp & 0x3f));
    } else {
        *o++ = (char)(0xf0 | cp >> 18);
        *o++ = (char)(0x80 | ((cp >> 12) & 0x3f));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *o++ = (char)(0x80 | (cp & 0x3f));
    }
    return o;
}

/* Reads a string at j->p (the opening quote). With out non-NULL, the decoded bytes go
 * there (the caller sized it: decoded is never longer than encoded). */
static bool jr_string(struct jr *j, char *out, size_t *out_len)
{
    if (j->p >= j->end || *j->p != '"') return false;
    j->p++;
    char *o = out;
    while (j->p < j->end && *j->p != '"') {
        char c = *j->p++;
        if (c != '\\') {
            if (o) *o++ = c;
            continue;
        }
        if (j->p >= j->end) return false;
        c = *j->p++;
        const char *simple = strchr("\"\\/bfnrt", c);
        if (c && simple) {
            static const char map[] = "\"\\/\b\f\n\r\t";
            if (o) *o++ = map[simple - "\"\\/bfnrt"];
            continue;
        }
        if (c != 'u') return false;
        uint32_t cp, lo;
        if (!jr_hex4(j, &cp)) return false;
        if (cp >= 0xd800 && cp <= 0xdbff && j->end - j->p >= 6 && j->p[0] == '\\' &&
            j->p[1] == 'u') {
            struct jr save = *j;
            j->p += 2;
            if (jr_hex4(j, &lo) && lo >= 0xdc00 && lo <= 0xdfff)
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            else
                *j = save, cp = 0xfffd;
        } else if (cp >= 0xd800 && cp <= 0xdfff) {
            cp = 0xfffd; /* lone surrogate, as Go decodes it */
        }
        if (o) o = put_utf8(o, cp);
    }
    if (j->p >= j->end) return false;
    j->p++;
    if (out_len) *out_len = o ? (size_t)(o - out) : 0;
    return true;
}

static bool jr_skip(struct jr *j, int depth);

static bool jr_skip_container(struct jr *j, int depth, char close)
{
    j->p++;
    jr_ws(j);
    if (j->p < j->end && *j->p == close) return j->p++, true;
    for (;;) {
        if (close == '}') {
            jr_ws(j);
            if (!jr_string(j, NULL, NULL)) return false;
            jr_ws(j);
            if (j->p >= j->end || *j->p++ != ':') return false;
        }
        if (!jr_skip(j, depth + 1)) return false;
        jr_ws(j);
        if (j->p >= j->end) return false;
        char c = *j->p++;
        if (c == close) return true;
        if (c != ',') return false;
    }
}

static bool jr_skip(struct jr *j, int depth)
{
    jr_ws(j);
    if (j->p >= j->end || depth > 32) return false;
    char c = *j->p;
    if (c == '"') return jr_string(j, NULL, NULL);
    if (c == '{') return jr_skip_container(j, depth, '}');
    if (c == '[') return jr_skip_container(j, depth, ']');
    const char *start = j->p;
    while (j->p < j->end && (strchr("+-.eE", *j->p) || (*j->p >= '0' && *j->p <= '9') ||
                             (*j->p >= 'a' && *j->p <= 'z')))
        j->p++;
    return j->p > start;
}

/* Parses a stored key. On success *value is malloc'd (free it). */
bool redis_key_parse(const char *s, size_t n, uint32_t *version, char **value, size_t *value_len)
{
    struct jr j = { s, s + n };
    char *val = NULL;
    size_t vlen = 0;
    long long ver = 0;
    jr_ws(&j);
    if (j.p >= j.end || *j.p++ != '{') return false;
    jr_ws(&j);
    if (j.p < j.end && *j.p == '}') goto done;
    for (;;) {
        jr_ws(&j);
        const char *kstart = j.p + 1;
        if (!jr_string(&j, NULL, NULL)) goto fail;
        size_t klen = (size_t)(j.p - kstart - 1);
        jr_ws(&j);
        if (j.p >= j.end || *j.p++ != ':') goto fail;
        jr_ws(&j);
        if (klen == 7 && !strncasecmp(kstart, "Version", 7) && j.p < j.end && *j.p != '"' &&
            *j.p != 'n') {
            char *endp;
            char num[32];
            size_t l = 0;
            while (j.p + l < j.end && l < sizeof num - 1 && strchr("+-.eE0123456789", j.p[l])) l++;
            memcpy(num, j.p, l);
            num[l] = 0;
            ver = (long long)strtod(num, &endp);
            if (endp == num) goto fail;
            j.p += l;
        } else if (klen == 5 && !strncasecmp(kstart, "Value", 5) && j.p < j.end && *j.p == '"') {
            free(val);
            if (!(val = malloc((size_t)(j.end - j.p) + 1))) goto fail;
            if (!jr_string(&j, val, &vlen)) goto fail;
        } else if (!jr_skip(&j, 0)) {
            goto fail;
        }
        jr_ws(&j);
        if (j.p >= j.end) goto fail;
        char c = *j.p++;
        if (c == '}') break;
        if (c != ',') goto fail;
    }
done:
    if (!val && !(val = malloc(1))) return false;
    *version = (uint32_t)ver;
    *value = val;
    *value_len = vlen;
    return true;
fail:
    free(val);
    return false;
}
