/* tls: owns the TLS policy and the loading of CertFile/KeyFile into an SSL_CTX. */
#include "tls.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "log.h"

/* TLS 1.2 suites: forward secrecy and AEAD only. TLS 1.3 keeps OpenSSL's defaults,
 * which are all of that kind already. */
#define TLS12_CIPHERS "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!SHA1:!DSS"

/* A service has no terminal: an encrypted key must fail to load, not wait for a
 * passphrase on stdin. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return 0;
}

/* The last OpenSSL error as text, or `fallback` when the queue is empty. */
static const char *ssl_reason(char *buf, size_t len, const char *fallback)
{
    unsigned long e = ERR_peek_last_error();
    ERR_clear_error();
    if (!e) return fallback;
    const char *r = ERR_reason_error_string(e);
    snprintf(buf, len, "%s", r ? r : fallback);
    return buf;
}

/* fopen first: "No such file or directory" or "Permission denied" are clearer than
 * what OpenSSL reports for the same cause. */
static int check_readable(const char *key, const char *path, char *err, size_t err_len)
{
    if (!path || !*path) {
        snprintf(err, err_len, "%s: not set (CertFile and KeyFile go together)", key);
        return -1;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, err_len, "%s: %s: %s", key, path, strerror(errno));
        return -1;
    }
    fclose(f);
    return 0;
}

static void warn_if_expired(SSL_CTX *ctx, const char *cert_file)
{
    X509 *cert = SSL_CTX_get0_certificate(ctx);
    if (!cert) return;
    if (X509_cmp_current_time(X509_get0_notAfter(cert)) < 0)
        log_warn("CertFile: %s: the certificate has expired; browsers will refuse it", cert_file);
    else if (X509_cmp_current_time(X509_get0_notBefore(cert)) > 0)
        log_warn("CertFile: %s: the certificate is not valid yet", cert_file);
}

static int configure(SSL_CTX *ctx, const char *cert_file, const char *key_file, int warn, char *err,
                     size_t err_len)
{
    char why[256];
    if (check_readable("CertFile", cert_file, err, err_len)) return -1;
    if (check_readable("KeyFile", key_file, err, err_len)) return -1;

    ERR_clear_error();
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)) {
        snprintf(err, err_len, "TLS: cannot require TLS 1.2: %s", ssl_reason(why, sizeof why, "?"));
        return -1;
    }
    if (!SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS)) {
        snprintf(err, err_len, "TLS: cipher list rejected: %s", ssl_reason(why, sizeof why, "?"));
        return -1;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* Lets browsers resume sessions instead of a full handshake per reconnect. */
    static const unsigned char sid[] = "zwibbler";
    SSL_CTX_set_session_id_context(ctx, sid, sizeof sid - 1);
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);

    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        snprintf(err, err_len, "CertFile: %s: no PEM certificate in it (OpenSSL: %s)", cert_file,
                 ssl_reason(why, sizeof why, "unreadable"));
        return -1;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        /* OpenSSL compares the key with the certificate while loading it. */
        unsigned long e = ERR_peek_last_error();
        if (ERR_GET_LIB(e) == ERR_LIB_X509 && (ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH ||
                                               ERR_GET_REASON(e) == X509_R_KEY_TYPE_MISMATCH)) {
            ERR_clear_error();
            snprintf(err, err_len,
                     "KeyFile: %s: the key does not match the certificate in CertFile %s", key_file,
                     cert_file);
            return -1;
        }
        snprintf(err, err_len,
                 "KeyFile: %s: not a PEM private key, or an encrypted one (OpenSSL: %s)", key_file,
                 ssl_reason(why, sizeof why, "unreadable"));
        return -1;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        ERR_clear_error();
        snprintf(err, err_len, "KeyFile: %s: the key does not match the certificate in CertFile %s",
                 key_file, cert_file);
        return -1;
    }
    if (warn) warn_if_expired(ctx, cert_file);
    return 0;
}

int tls_configure(void *ssl_ctx, const char *cert_file, const char *key_file, char *err,
                  size_t err_len)
{
    return configure(ssl_ctx, cert_file, key_file, 0, err, err_len);
}

int tls_check_files(const char *cert_file, const char *key_file, char *err, size_t err_len)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        snprintf(err, err_len, "TLS: cannot create a context (out of memory?)");
        return -1;
    }
    int rc = configure(ctx, cert_file, key_file, 1, err, err_len);
    SSL_CTX_free(ctx);
    return rc;
}
