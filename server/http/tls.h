/* tls: the server's TLS set-up for CertFile/KeyFile: checks the files before anything
 * listens, and configures the SSL_CTX that CivetWeb hands to its init_ssl callback.
 *
 * Policy: TLS 1.2 and 1.3 only; forward-secret AEAD ciphers for TLS 1.2 (ECDHE with
 * AES-GCM or ChaCha20-Poly1305), OpenSSL's defaults for TLS 1.3; no compression, no
 * renegotiation, server cipher preference. CertFile may hold the server certificate
 * followed by its intermediates (a "fullchain" file); KeyFile holds the private key.
 */
#ifndef ZW_TLS_H
#define ZW_TLS_H

#include <stddef.h>

/* Loads CertFile and KeyFile into a scratch context and checks that the key matches
 * the certificate, so that a bad file stops start-up with a clear reason instead of
 * failing on the first connection. Returns 0, or -1 with a message in err naming the
 * key and the file ("KeyFile: /path: ..."). */
int tls_check_files(const char *cert_file, const char *key_file, char *err, size_t err_len);

/* Configures `ssl_ctx` (an SSL_CTX *) with the policy above and the two files.
 * Returns 0, or -1 with a message in err. Meant for CivetWeb's init_ssl callback. */
int tls_configure(void *ssl_ctx, const char *cert_file, const char *key_file, char *err,
                  size_t err_len);

#endif
