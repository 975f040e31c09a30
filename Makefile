# zwibbler-server build. `make run` and `make test` install what is missing first.
#   make            build build/release/zwibbler
#   make run        build and start on port 3000 with LMDB under ./data
#   make test       unit + integration tests, then again under ASan/UBSan and TSan
#   make SAN=asan   build the sanitizer variant into build/asan (also tsan)

SAN ?=
VARIANT := $(if $(SAN),$(SAN),release)
B := build/$(VARIANT)
CW := build/civetweb

CC ?= cc
OBJCOPY ?= objcopy
WARN := -Wall -Wextra -Werror
OPT_release := -O2 -g
OPT_asan := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
OPT_tsan := -O1 -g -fsanitize=thread
OPT := $(OPT_$(VARIANT))
# Every room's folder is on the include path, so a file names a header by its module
# name ("hub.h"), and the folder tree alone says where a module lives.
ROOMS := util protocol storage storage/lmdb storage/sqlite storage/redis \
         server/core server/http server/auth server/cluster server/app
BIN_ROOMS := server/cmd server/loadtest
INCLUDES := $(ROOMS:%=-I%) -I$(CW)/include
CFLAGS := -std=c11 -D_GNU_SOURCE $(WARN) $(OPT) -pthread $(INCLUDES) $(EXTRA_CFLAGS)
LDFLAGS := $(OPT) -pthread $(EXTRA_LDFLAGS)
LIBS := -llmdb -lcjson -lsqlite3 -lhiredis -lcurl -lssl -lcrypto -lz -ldl -lm

# CivetWeb 1.15 from Debian's source package (scripts/deps.sh), built with what we
# need and nothing more: no zlib (its permessage-deflate is not ours: protocol/wsdeflate.c), small thread stacks; an atomic stop
# flag and gmtime_r (ThreadSanitizer found races on both); a 0.5 s poll quantum
# (mg_stop waits up to one quantum for the listener thread: 2 s by default).
CW_FLAGS := -DUSE_WEBSOCKET -DUSE_IPV6 -DOPENSSL_API_3_0 -DNO_SSL_DL -DNO_CGI \
            -DUSE_STACK_SIZE=131072 -DSTOP_FLAG_NEEDS_LOCK -DREENTRANT_TIME \
            -DSOCKET_TIMEOUT_QUANTUM=500 \
            -I$(CW)/include -I$(CW)/src

# libzwibbler.a: the rooms an embedder links. The command line, the service installer,
# privilege dropping and the load tester are linked into the binary only.
LIB_SRCS := $(filter-out server/http/civetweb_build.c,$(foreach r,$(ROOMS),$(wildcard $(r)/*.c)))
BIN_SRCS := $(foreach r,$(BIN_ROOMS),$(wildcard $(r)/*.c))
BIN_OBJS := $(BIN_SRCS:%.c=$(B)/%.o)
$(BIN_OBJS): CFLAGS += $(BIN_ROOMS:%=-I%)
LIB_OBJS := $(LIB_SRCS:%.c=$(B)/%.o)
WEB_FILES := $(sort $(wildcard server/http/web/*.html))
WEB_OBJ := $(B)/gen/web_assets.o
CW_OBJ := $(B)/server/http/civetweb_build.o
LIB := $(B)/libzwibbler.a
# The same objects with every name visible, for the binary and the unit tests.
LIB_INTERNAL := $(B)/libzwibbler_internal.a
BIN := $(B)/zwibbler

UNIT_SRCS := $(wildcard test/unit/test_*.c)
EMBED_EXAMPLE := $(B)/test/embed/example
UNIT_BINS := $(UNIT_SRCS:%.c=$(B)/%)

.PHONY: all deps run test unit integration sanitize clean bench fuzz
all: $(BIN) $(LIB)

deps:
	@bash scripts/deps.sh

$(CW)/src/civetweb.c: scripts/civetweb.patch
	@bash scripts/deps.sh
	@touch $@

$(B)/%.o: %.c $(CW)/src/civetweb.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

# Our wrapper includes civetweb.c (third-party warnings are not ours to fix).
$(CW_OBJ): server/http/civetweb_build.c $(CW)/src/civetweb.c
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -D_GNU_SOURCE $(OPT) -pthread -w $(CW_FLAGS) -c $< -o $@

# Only the public API (ZW_PUBLIC in zwibbler.h, store.h, lmdb_store.h) keeps default
# visibility. In a static archive hidden names are still linkable, so libzwibbler.a is
# one relocatable object in which they are made local; CivetWeb's mg_* stay global
# (an embedder mounts on its own CivetWeb), less our two extensions (civetweb_ext.h).
$(LIB_OBJS) $(WEB_OBJ): CFLAGS += -fvisibility=hidden
CW_PRIVATE := mg_zw_detach mg_zw_set_ws_limits
$(LIB): $(LIB_OBJS) $(CW_OBJ) $(WEB_OBJ)
	$(LD) -r -o $(B)/libzwibbler.o $^
	$(OBJCOPY) --localize-hidden $(CW_PRIVATE:%=--localize-symbol=%) $(B)/libzwibbler.o
	@rm -f $@
	ar rcs $@ $(B)/libzwibbler.o

$(LIB_INTERNAL): $(LIB_OBJS) $(CW_OBJ) $(WEB_OBJ)
	@rm -f $@
	ar rcs $@ $^

# The /socket/test and /socket/demo pages (server/http/web/), embedded as byte arrays.
$(B)/gen/web_assets.c: $(WEB_FILES) scripts/embed.sh
	@mkdir -p $(dir $@)
	sh scripts/embed.sh $@ $(WEB_FILES)
$(WEB_OBJ): $(B)/gen/web_assets.c server/http/web.h
	$(CC) $(CFLAGS) -c $< -o $@

# The binary and the unit tests call internal modules (config, log, auth, ...).
$(BIN): $(BIN_OBJS) $(LIB_INTERNAL)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

# Storage tests share one backend-independent conformance suite.
$(B)/test/unit/test_store_%: test/unit/test_store_%.c test/unit/store_conformance.c $(LIB_INTERNAL)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itest/unit -o $@ $< test/unit/store_conformance.c $(LIB_INTERNAL) $(LIBS) -lcmocka

# The core's tests share one fixture: store, hub and a fake loop (core_fixture.h).
CORE_TESTS := $(B)/test/unit/test_session $(B)/test/unit/test_hub
$(CORE_TESTS): $(B)/test/unit/%: test/unit/%.c test/unit/core_fixture.c test/unit/core_fixture.h $(LIB_INTERNAL)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itest/unit -o $@ $< test/unit/core_fixture.c $(LIB_INTERNAL) $(LIBS) -lcmocka

$(B)/test/unit/%: test/unit/%.c $(LIB_INTERNAL)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itest/unit -o $@ $< $(LIB_INTERNAL) $(LIBS) -lcmocka

# The embedding example (docs/embedding.md), linked the way a user's program is.
$(EMBED_EXAMPLE): test/embed/example.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LIB) $(LIBS)

run: deps $(BIN)
	@mkdir -p data
	$(BIN) --config conf/local.conf

unit: deps $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done

integration: deps $(BIN) $(EMBED_EXAMPLE) $(LIB)
	ZWIBBLER_BIN=$(abspath $(BIN)) EMBED_EXAMPLE=$(abspath $(EMBED_EXAMPLE)) ZWIBBLER_LIB=$(abspath $(LIB)) \
	  /usr/bin/python3 -m pytest -q -p no:cacheprovider test/integration

# The hub and session integration tests against the TSan server (`make SAN=tsan
# integration-tsan`). A report makes the server exit 66, which the fixture fails on.
TSAN_TESTS := test_session.py test_race.py test_keys.py test_hostile.py test_slow.py test_continuation.py \
              test_wsconformance.py test_compression.py
integration-tsan: deps $(BIN)
	ZW_TEST_BACKENDS=lmdb TSAN_OPTIONS="exitcode=66 halt_on_error=0 second_deadlock_stack=1 $(TSAN_OPTIONS)" \
	ZWIBBLER_BIN=$(abspath $(BIN)) /usr/bin/python3 -m pytest -q -p no:cacheprovider \
	  $(TSAN_TESTS:%=test/integration/%)

# The full suite: release, then ASan+UBSan (everything), then TSan (hub and sessions),
# then each fuzz target for a short while (test/fuzz/fuzz.mk).
test: deps
	$(MAKE) unit integration
	$(MAKE) browser-test
	$(MAKE) SAN=asan unit integration
	$(MAKE) SAN=tsan unit integration-tsan
	$(MAKE) fuzz-short
	@echo "all test suites passed"

# Benchmarks (minutes; not part of `make test`): prints a table, see BENCHMARKS.md.
# The floor (test/bench/floor.c) is a minimal relay server the bench runs beside ours.
FLOOR := build/release/test/bench/floor
$(FLOOR): test/bench/floor.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -D_GNU_SOURCE $(WARN) -O2 -o $@ $< -lcrypto
bench: $(BIN) $(FLOOR)
	/usr/bin/python3 test/bench/bench.py --bin $(abspath $(BIN)) --floor $(abspath $(FLOOR)) $(BENCH_ARGS)
	/usr/bin/python3 test/bench/cluster_bench.py --bin $(abspath $(BIN))

clean:
	rm -rf build/release build/asan build/tsan build/fuzz

-include $(LIB_OBJS:.o=.d) $(BIN_OBJS:.o=.d)
include test/fuzz/fuzz.mk

# conf/zwibbler.service as a C string for `zwibbler --install` (server/cmd/service.c), so
# the unit it writes is the one the package ships.
$(B)/gen/zwibbler_service.inc: conf/zwibbler.service
	@mkdir -p $(dir $@)
	sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$$/\\n"/' $< > $@
$(B)/server/cmd/service.o: $(B)/gen/zwibbler_service.inc
$(B)/server/cmd/service.o: CFLAGS += -I$(B)/gen

# Debian package: build/zwibbler_<version>_<arch>.deb, see scripts/mkdeb.sh.
.PHONY: deb rpm
deb: $(BIN)
	BIN=$(abspath $(BIN)) OUT=$(abspath build) bash scripts/mkdeb.sh

# RPM with the same files and scriptlets: build/zwibbler-<version>-1.<arch>.rpm, see
# scripts/mkrpm.sh (rpmbuild from Debian's rpm package).
rpm: $(BIN)
	BIN=$(abspath $(BIN)) OUT=$(abspath build) bash scripts/mkrpm.sh

# Browser tests: /socket/test and /socket/demo in Debian's Chromium, driven
# by playwright-core from npm (never Playwright's own browser download). Bounded: a
# hung browser or server cannot hold up `make test` for more than 10 minutes.
.PHONY: browser-test
browser-test: deps $(BIN)
	@command -v node >/dev/null && command -v npm >/dev/null || { echo "browser-test: needs Node.js 20+ and npm" >&2; exit 1; }
	@cd test/browser && { [ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund; }
	cd test/browser && ZWIBBLER_BIN=$(abspath $(BIN)) timeout -k 10 600 node --test --test-reporter=spec --test-concurrency=1 --test-timeout=180000 *.test.mjs
