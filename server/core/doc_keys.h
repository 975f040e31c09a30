/* doc_keys: a document's keys as one namespace (docs/protocol.md, Keys), for the session logic.
 *
 * A name is held by at most one key at a time: a client key (lifetime 0, in memory —
 * in Redis in cluster mode — removed when its owner leaves) or a session key (stored
 * with the document). A SET KEY is compared against whichever holds the name. The
 * holder's kind stays: a write to a name held by a session key is stored (the key
 * outlives its writer, whatever lifetime the write asked for), a write to a name held
 * by a client key updates that client key (it changes owner and goes when the new
 * owner leaves). Only a free name takes the kind the write asks for. So no write
 * ever deletes stored data, and no transient key silently becomes permanent.
 *
 * Not for other modules: callers hold d->lock (hub_internal.h).
 */
#ifndef ZW_DOC_KEYS_H
#define ZW_DOC_KEYS_H

struct codec_set_key;
struct doc;
struct hub;
struct hub_client;

/* Applies c's SET KEY k (limits and admin: checked by the caller): compare and set
 * against the holder, then announce to the document's other clients. Returns 1 when
 * accepted, 0 when rejected (version mismatch, out of memory, storage failure:
 * logged). */
int doc_keys_set(struct hub *h, struct doc *d, struct hub_client *c, const struct codec_set_key *k);

/* Queues for joining client c one KEY INFORMATION with every key of d, one entry per
 * name: should a name be held twice (possible only in cluster mode, when two servers
 * raced), the higher version is sent, the session key on a tie. Nothing is sent when
 * there are no keys. */
void doc_keys_send_all(struct hub *h, struct doc *d, struct hub_client *c);

#endif
