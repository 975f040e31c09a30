/* fuzz_config: libFuzzer target for server/app/config.c — config_parse_line on every line
 * of the input, and config_load on the input as a whole file. Whatever the input, the
 * parser must not overrun, leak, or leave a field outside its documented range. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) abort();                                                                         \
    } while (0)

static void check_ranges(const struct config *c)
{
    CHECK(c->port >= 1 && c->port <= 65535);
    CHECK(c->max_connections >= 0 && c->max_connections <= 1000000);
    CHECK(c->max_message_bytes >= 1024 && c->max_message_bytes <= (1u << 31));
    CHECK(c->max_doc_id_bytes >= 1 && c->max_doc_id_bytes <= (16u << 20));
    CHECK(c->send_queue_bytes >= 4096);
    CHECK(c->session_threads >= 1 && c->session_threads <= 256);
    CHECK(c->read_timeout_ms >= 100);
    CHECK(c->swarm_count >= 0 && c->swarm_count <= CONFIG_MAX_SWARM);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct config c;
    char err[512];

    /* Line by line. */
    config_defaults(&c);
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    for (char *line = text, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        err[0] = 0;
        int rc = config_parse_line(&c, line, err, sizeof err);
        CHECK(rc >= -1 && rc <= 1);
        if (rc) CHECK(err[0] != 0 && memchr(err, 0, sizeof err));
    }
    check_ranges(&c);
    config_free(&c);
    free(text);

    /* As a file (an in-memory one). */
    int fd = memfd_create("fuzz.conf", 0);
    if (fd < 0) return 0;
    if (write(fd, data, size) == (ssize_t)size) {
        char path[64];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        config_defaults(&c);
        int saved = dup(2), devnull = open("/dev/null", 1); /* warnings go to stderr */
        if (devnull >= 0) dup2(devnull, 2);
        (void)config_load(&c, path, 1, err, sizeof err);
        if (saved >= 0) dup2(saved, 2), close(saved);
        if (devnull >= 0) close(devnull);
        check_ranges(&c);
        config_free(&c);
    }
    close(fd);
    return 0;
}
