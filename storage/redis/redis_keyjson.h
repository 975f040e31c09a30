/* redis_keyjson: a session key as the reference server stores it in Redis, the JSON
 * object {"Version":n,"Name":"…","Value":"…"} (Go's encoding/json), written and read
 * byte-exact: values may hold any bytes, NUL and invalid UTF-8 included. */
#ifndef ZW_REDIS_KEYJSON_H
#define ZW_REDIS_KEYJSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The JSON of a key in a new NUL-terminated buffer (*out_len bytes); NULL when out of
 * memory. */
char *redis_key_json(uint32_t version, const uint8_t *name, size_t name_len, const uint8_t *value,
                     size_t value_len, size_t *out_len);

/* Parses a stored key (field names match case-insensitively, as Go's decoder does;
 * unknown fields are skipped). On success *value is malloc'd (free it). False for
 * malformed JSON. */
bool redis_key_parse(const char *s, size_t n, uint32_t *version, char **value, size_t *value_len);

#endif
