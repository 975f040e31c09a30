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
WARN := -Wall -Wextra -Werror
OPT_release := -O2 -g
OPT_asan := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
OPT_tsan := -O1 -g -fsanitize=thread
OPT := $(OPT_$(VARIANT))
INCLUDES := -Iprotocol -Istorage -Iserver -I$(CW)/include
CFLAGS := -std=c11 -D_GNU_SOURCE $(WARN) $(OPT) -pthread $(INCLUDES) $(EXTRA_CFLAGS)
LDFLAGS := $(OPT) -pthread $(EXTRA_LDFLAGS)
LIBS := -llmdb -lcjson -lsqlite3 -lhiredis -lcurl -lssl -lcrypto -lz -ldl -lm

# CivetWeb 1.15 from Debian's source package (scripts/deps.sh), built with what we
# need and nothing more: no zlib (see README), small thread stacks.
CW_FLAGS := -DUSE_WEBSOCKET -DUSE_IPV6 -DOPENSSL_API_3_0 -DNO_SSL_DL -DNO_CGI \
            -DUSE_STACK_SIZE=131072 \
            -I$(CW)/include -I$(CW)/src

LIB_SRCS := $(wildcard protocol/*.c storage/*.c) $(filter-out server/main.c server/civetweb_build.c,$(wildcard server/*.c))
LIB_OBJS := $(LIB_SRCS:%.c=$(B)/%.o)
CW_OBJ := $(B)/server/civetweb_build.o
LIB := $(B)/libzwibbler.a
BIN := $(B)/zwibbler

UNIT_SRCS := $(wildcard test/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:%.c=$(B)/%)

.PHONY: all deps run test unit integration sanitize clean bench fuzz
all: $(BIN)

deps:
	@bash scripts/deps.sh

$(CW)/src/civetweb.c:
	@bash scripts/deps.sh

$(B)/%.o: %.c $(CW)/src/civetweb.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

# Our wrapper includes civetweb.c (third-party warnings are not ours to fix).
$(CW_OBJ): server/civetweb_build.c $(CW)/src/civetweb.c
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -D_GNU_SOURCE $(OPT) -pthread -w $(CW_FLAGS) -c $< -o $@

$(LIB): $(LIB_OBJS) $(CW_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BIN): $(B)/server/main.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(B)/test/unit/%: test/unit/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itest/unit -o $@ $< $(LIB) $(LIBS) -lcmocka

run: deps $(BIN)
	@mkdir -p data
	$(BIN) --config conf/local.conf

unit: deps $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done

integration: deps $(BIN)
	ZWIBBLER_BIN=$(abspath $(BIN)) /usr/bin/python3 -m pytest -q -p no:cacheprovider test/integration

# The full suite: release, then ASan+UBSan (everything), then TSan (hub and sessions).
test: deps
	$(MAKE) unit integration
	$(MAKE) SAN=asan unit integration
	$(MAKE) SAN=tsan unit
	@echo "all test suites passed"

# Benchmarks of issue 5 (minutes; not part of `make test`): prints a table, see BENCHMARKS.md.
bench: $(BIN)
	/usr/bin/python3 test/bench/bench.py --bin $(abspath $(BIN)) $(BENCH_ARGS)

clean:
	rm -rf build/release build/asan build/tsan

-include $(LIB_OBJS:.o=.d) $(B)/server/main.d
