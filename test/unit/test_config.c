/* test_config: the configuration file parser: every key, defaults, bad values named. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

static void test_defaults(void **state)
{
    (void)state;
    struct config c;
    config_defaults(&c);
    assert_string_equal(c.bind_address, "0.0.0.0");
    assert_int_equal(c.port, 3000);
    assert_string_equal(c.database, "lmdb");
    assert_string_equal(c.data_dir, "/var/lib/zwibbler");
    assert_int_equal(c.expiration, 86400);
    assert_int_equal(c.max_connections, 0); /* auto */
    assert_int_equal(c.max_message_bytes, 16u << 20);
    assert_int_equal(c.init_timeout_ms, 30000);
    assert_int_equal(c.compression, 1);
    assert_null(c.cert_file);
    config_free(&c);
}

static void test_every_reference_key(void **state)
{
    (void)state;
    char path[] = "/tmp/zwcfgXXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs("# comment\n"
          "   \n"
          "ServerBindAddress = 127.0.0.1 \n"
          "ServerPort=8443\n"
          "CertFile=/etc/ssl/cert.pem\n"
          "KeyFile=/etc/ssl/key.pem\n"
          "Compression=off\n"
          "Database=SQLite\n"
          "DataDir=/srv/zw\n"
          "RedisServer=redis:6380\n"
          "DbUser=u\n"
          "RedisPassword=p w\n"
          "Expiration=never\n"
          "SecretUser=admin\n"
          "SecretPassword=s3cret=x\n"
          "JWTKey=a2V5\n"
          "JWTKeyIsBase64=true\n"
          "Webhook=http://127.0.0.1/hook\n"
          "MaxFiles=50000\n"
          "SwarmURL=ws://a/socket\n"
          "SwarmURL=ws://b/socket\n"
          "SendQueueBytes=64K\n"
          "MaxMessageBytes=1M\n",
          f);
    fclose(f);
    struct config c;
    config_defaults(&c);
    char err[256] = "";
    assert_int_equal(config_load(&c, path, 1, err, sizeof err), 0);
    unlink(path);
    assert_string_equal(c.bind_address, "127.0.0.1");
    assert_int_equal(c.port, 8443);
    assert_string_equal(c.cert_file, "/etc/ssl/cert.pem");
    assert_string_equal(c.key_file, "/etc/ssl/key.pem");
    assert_int_equal(c.compression, 0);
    assert_string_equal(c.database, "sqlite");
    assert_string_equal(c.data_dir, "/srv/zw");
    assert_string_equal(c.db_server, "redis:6380");
    assert_string_equal(c.db_user, "u");
    assert_string_equal(c.db_password, "p w");
    assert_int_equal(c.expiration, 0);
    assert_string_equal(c.secret_user, "admin");
    assert_string_equal(c.secret_password, "s3cret=x");
    assert_string_equal(c.jwt_key, "a2V5");
    assert_int_equal(c.jwt_key_is_base64, 1);
    assert_string_equal(c.webhook, "http://127.0.0.1/hook");
    assert_int_equal(c.max_files, 50000);
    assert_int_equal(c.swarm_count, 2);
    assert_string_equal(c.swarm_urls[1], "ws://b/socket");
    assert_int_equal(c.send_queue_bytes, 64u << 10);
    assert_int_equal(c.max_message_bytes, 1u << 20);
    config_free(&c);
}

/* Each bad value is refused and the message names the key. */
static void test_bad_values_name_the_key(void **state)
{
    (void)state;
    static const char *const bad[][2] = {
        { "ServerPort=0", "ServerPort" },
        { "ServerPort=65536", "ServerPort" },
        { "ServerPort=80x", "ServerPort" },
        { "ServerPort=", "ServerPort" },
        { "Database=mongo", "Database" },
        { "Expiration=-5", "Expiration" },
        { "Expiration=soon", "Expiration" },
        { "JWTKeyIsBase64=maybe", "JWTKeyIsBase64" },
        { "Compression=2", "Compression" },
        { "MaxFiles=abc", "MaxFiles" },
        { "MaxConnections=0", "MaxConnections" },
        { "SendQueueBytes=12Q", "SendQueueBytes" },
        { "MaxMessageBytes=99999999999999999999", "MaxMessageBytes" },
        { "MaxDocIdBytes=17M", "MaxDocIdBytes" },
        { "MaxDocIdBytes=0", "MaxDocIdBytes" },
        { "RedisSentinels=10.0.0.1", "RedisSentinels" },
        { "RedisSentinels=a:1,b", "RedisSentinels" },
        { "RedisSentinels=a:1,,b:2", "RedisSentinels" },
        { "RedisSentinels=:26379", "RedisSentinels" },
        { "RedisSentinels=a:70000", "RedisSentinels" },
        { "RedisMasterName=", "RedisMasterName" },
        { "RedisMasterName=my master", "RedisMasterName" },
        { "RedisMinReplicas=-1", "RedisMinReplicas" },
        { "RedisMinReplicas=two", "RedisMinReplicas" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct config c;
        config_defaults(&c);
        char err[256] = "";
        assert_int_equal(config_parse_line(&c, bad[i][0], err, sizeof err), -1);
        assert_non_null(strstr(err, bad[i][1]));
        config_free(&c);
    }
}

/* Redis Sentinel: none by default; a list of host:port, a name, a password, a count. */
static void test_sentinel_keys(void **state)
{
    (void)state;
    struct config c;
    config_defaults(&c);
    assert_null(c.redis_sentinels);
    assert_string_equal(c.redis_master_name, "zwibbler");
    assert_int_equal(c.redis_min_replicas, 0);
    char err[256] = "";
    static const char *const lines[] = {
        "RedisSentinels = 10.0.0.1:26379, [::1]:26380,sentinel-3.internal:26379",
        "RedisMasterName=main", "RedisSentinelPassword=p@ss", "RedisMinReplicas=2"};
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++)
        assert_int_equal(config_parse_line(&c, lines[i], err, sizeof err), 0);
    assert_string_equal(c.redis_sentinels, "10.0.0.1:26379, [::1]:26380,sentinel-3.internal:26379");
    assert_string_equal(c.redis_master_name, "main");
    assert_string_equal(c.redis_sentinel_password, "p@ss");
    assert_int_equal(c.redis_min_replicas, 2);
    config_free(&c);
}

static void test_unknown_key_and_garbage(void **state)
{
    (void)state;
    struct config c;
    config_defaults(&c);
    char err[256] = "";
    assert_int_equal(config_parse_line(&c, "NoSuchKey=1", err, sizeof err), 1);
    assert_non_null(strstr(err, "NoSuchKey"));
    assert_int_equal(config_parse_line(&c, "just words", err, sizeof err), -1);
    assert_int_equal(config_parse_line(&c, "# ServerPort=1", err, sizeof err), 0);
    assert_int_equal(c.port, 3000);
    config_free(&c);
}

static void test_file_errors(void **state)
{
    (void)state;
    struct config c;
    config_defaults(&c);
    char err[256] = "";
    /* The default path may be absent; an explicit one must exist. */
    assert_int_equal(config_load(&c, "/nonexistent/zw.conf", 0, err, sizeof err), 0);
    assert_int_equal(config_load(&c, "/nonexistent/zw.conf", 1, err, sizeof err), -1);
    assert_non_null(strstr(err, "/nonexistent/zw.conf"));

    char path[] = "/tmp/zwcfgXXXXXX";
    int fd = mkstemp(path);
    assert_true(write(fd, "ServerPort=1\nServerPort=x\n", 26) == 26);
    close(fd);
    assert_int_equal(config_load(&c, path, 1, err, sizeof err), -1);
    assert_non_null(strstr(err, ":2:"));
    assert_non_null(strstr(err, "ServerPort"));
    unlink(path);
    config_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_every_reference_key),
        cmocka_unit_test(test_bad_values_name_the_key),
        cmocka_unit_test(test_sentinel_keys),
        cmocka_unit_test(test_unknown_key_and_garbage),
        cmocka_unit_test(test_file_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
