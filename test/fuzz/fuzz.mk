# Fuzz targets, included by the Makefile. libFuzzer with clang from Debian
# (scripts/deps.sh installs clang and libclang-rt-14-dev), ASan and UBSan on.
#   make fuzz         each target for FUZZ_TIME seconds (default 300)
#   make fuzz-short   each target for FUZZ_SHORT_TIME seconds (default 15; in `make test`)
# Seeds live in test/fuzz/corpus/<target>/ (committed, never written by a run); what a
# run discovers goes to build/fuzz/corpus/<target>/, a crash to build/fuzz/crash-*.
# Keep a crashing input as a regression seed in the committed corpus once it is fixed.

FUZZ_CC := clang
FZ := build/fuzz
FUZZ_TARGETS := codec config jwt form
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer -Wall -Wextra \
               -pthread $(INCLUDES) $(FUZZ_SAN) -fsanitize=fuzzer-no-link
# Each target links only the code it exercises (fuzz_form stubs the hub it never calls).
FUZZ_DEPS_codec := protocol/codec.o
FUZZ_DEPS_config := server/app/config.o
FUZZ_DEPS_jwt := server/auth/jwt.o
FUZZ_DEPS_form := server/http/mgmt_api.o server/http/rfc1123.o server/http/respond.o server/http/cors.o \
                  server/auth/jwt.o server/app/log.o \
                  $(patsubst %.c,%.o,$(wildcard storage/*.c storage/*/*.c)) server/http/civetweb_build.o
# WebSocket framing and permessage-deflate (the inflater also fuzzes negotiation).
FUZZ_TARGETS += wsframe wsinflate
FUZZ_DEPS_wsframe := protocol/wsframe.o
FUZZ_DEPS_wsinflate := protocol/wsdeflate.o
FUZZ_OBJS := $(sort $(foreach t,$(FUZZ_TARGETS),$(FUZZ_DEPS_$(t):%=$(FZ)/%)))
FUZZ_BINS := $(FUZZ_TARGETS:%=$(FZ)/fuzz_%)
FUZZ_TIME ?= 300
FUZZ_SHORT_TIME ?= 15

$(FZ)/%.o: %.c $(CW)/src/civetweb.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -MMD -MP -c $< -o $@

$(FZ)/server/http/civetweb_build.o: server/http/civetweb_build.c $(CW)/src/civetweb.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -std=gnu11 -D_GNU_SOURCE -g -O1 -pthread -w $(CW_FLAGS) $(FUZZ_SAN) \
	  -fsanitize=fuzzer-no-link -c $< -o $@

.SECONDEXPANSION:
$(FZ)/fuzz_%: test/fuzz/fuzz_%.c $$(addprefix $(FZ)/,$$(FUZZ_DEPS_$$*))
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(addprefix $(FZ)/,$(FUZZ_DEPS_$*)) $(LIBS)

fuzz-build: deps $(FUZZ_BINS)

# One target for $(1) seconds; fails on any crash, leak, timeout or sanitizer report.
define fuzz_run
	@set -e; for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FZ)/corpus/$$t; echo "== fuzz_$$t ($(1) s)"; \
	  $(FZ)/fuzz_$$t -max_total_time=$(1) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
	    -artifact_prefix=$(FZ)/crash-$$t- $(FZ)/corpus/$$t test/fuzz/corpus/$$t 2>$(FZ)/fuzz_$$t.log \
	    || { tail -60 $(FZ)/fuzz_$$t.log; exit 1; }; \
	  grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb" $(FZ)/fuzz_$$t.log | tr '\n' ' '; echo; \
	done
endef

fuzz: fuzz-build
	$(call fuzz_run,$(FUZZ_TIME))

fuzz-short: fuzz-build
	$(call fuzz_run,$(FUZZ_SHORT_TIME))

.PHONY: fuzz fuzz-short fuzz-build
-include $(FUZZ_OBJS:.o=.d)
