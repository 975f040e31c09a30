/* copy_store: `zwibbler --copy-store --from SPEC --to SPEC [--overwrite]`, which copies
 * every document (its bytes and session keys) and every live token from one store to
 * another through store.h, so a deployment can move between backends or machines.
 *
 * SPEC names a store:
 *   lmdb:DIR                 the LMDB store of DataDir=DIR (its files are in DIR/lmdb/)
 *   sqlite:FILE              a SQLite file named zwibbler.db, or the directory holding it
 *   redis:HOST[:PORT][,password=P][,expiration=SECONDS]
 *                            a Redis server (or redis:/path/to/socket)
 *   config:PATH              the store a configuration file names (Database, DataDir,
 *                            DbServer, DbPassword, Expiration), so no password is on
 *                            the command line
 *
 * A document the target already holds with the same bytes is left alone, so a copy can
 * be run again. One it holds with other bytes is refused (reported, left as it is)
 * unless --overwrite, which replaces it and its keys. A token the target holds with
 * other contents is refused either way. Run it with the servers of both stores stopped. */
#ifndef ZW_COPY_STORE_H
#define ZW_COPY_STORE_H

/* Runs the command from the whole argv. Prints what it copied and each refusal on
 * stdout, errors on stderr. Returns the exit status: 0 everything copied, 1 an error
 * stopped the copy, 2 a usage error, 3 the copy completed but something was refused. */
int copy_store_main(int argc, char **argv);

#endif
