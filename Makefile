# switchyard build.
#   make            release-ish build (-O2 -g) into build/
#   make test       sanitizer build (ASan+UBSan) and the whole suite: unit + integration,
#                   then the multi-loop tests again on a ThreadSanitizer build
#   make unit       unit tests only (sanitizer build)
#   make SANITIZE=address,undefined   any build with sanitizers
#   make WERROR=1   warnings are errors (CI sets this)
#   make fuzz       build every libFuzzer target of fuzz/ (needs clang; fails without it)
#   make fuzz FUZZ_SECS=N    ... and fuzz each for N seconds from its seed corpus; a crash
#                   fails and leaves the reproducer in build/fuzz/ (FUZZ_RUNS=N: N executions)

PKGS     := libuv libpq openssl hiredis
CC       ?= cc
BUILD    ?= build
SANITIZE ?=
WERROR   ?=

WARN     := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter
ifneq ($(WERROR),)
WARN     += -Werror
endif
OPT      ?= -O2 -g
CFLAGS   += $(OPT) -std=gnu11 $(WARN) -fno-strict-aliasing -D_GNU_SOURCE -I. $(shell pkg-config --cflags $(PKGS))
LDLIBS   += $(shell pkg-config --libs $(PKGS)) -lpthread
ifneq ($(SANITIZE),)
CFLAGS   += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS  += -fsanitize=$(SANITIZE)
endif

PROTO_SRC := $(wildcard protocol/*.c)
CONF_SRC  := $(wildcard conf/*.c)
PROXY_SRC := $(wildcard proxy/*/*.c)
LIB_OBJ   := $(patsubst %.c,$(BUILD)/%.o,$(PROTO_SRC) $(CONF_SRC))
PROXY_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(PROXY_SRC))
UNIT_SRC  := $(wildcard tests/unit/test_*.c)
UNIT_BIN  := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
TOOL_SRC  := $(wildcard tests/tools/*.c)
TOOL_BIN  := $(patsubst tests/tools/%.c,$(BUILD)/tools/%,$(TOOL_SRC))

.PHONY: all test unit integration clean asan tsan

all: $(BUILD)/switchyard $(UNIT_BIN) $(TOOL_BIN)

$(BUILD)/%.o: %.c $(wildcard */*.h proxy/*/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/libsy.a: $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^

$(BUILD)/switchyard: $(PROXY_OBJ) $(BUILD)/libsy.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libsy.a tests/unit/unit.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(filter %.o,$^) $(BUILD)/libsy.a $(LDLIBS)

# Unit tests of the pure parts of proxy/ link the one object they test.
$(BUILD)/tests/test_pipe: $(BUILD)/proxy/core/pipe.o

$(BUILD)/tools/%: tests/tools/%.c $(BUILD)/libsy.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libsy.a $(LDLIBS)

# The test target always uses the sanitizer build, in its own directory.
ASAN_BUILD := build-asan
ASAN_VARS  := BUILD=$(ASAN_BUILD) SANITIZE=address,undefined OPT="-O1 -g"

asan:
	$(MAKE) $(ASAN_VARS) all

# ThreadSanitizer build: sessions run on worker threads (proxy/core/worker.c).
TSAN_BUILD := build-tsan
TSAN_VARS  := BUILD=$(TSAN_BUILD) SANITIZE=thread OPT="-O1 -g"

tsan:
	$(MAKE) $(TSAN_VARS) all

unit: asan
	@set -e; for t in $(patsubst tests/unit/%.c,$(ASAN_BUILD)/tests/%,$(UNIT_SRC)); do echo "== $$t"; $$t; done

integration: asan
	SWITCHYARD_BIN=$(CURDIR)/$(ASAN_BUILD)/switchyard SWITCHYARD_TOOLS=$(CURDIR)/$(ASAN_BUILD)/tools \
	  /usr/bin/python3 tests/integration/run.py $(TESTS)

# Self-sufficient on a fresh machine: install what is missing first (quick when all is there).
test:
	@scripts/install-deps.sh
	$(MAKE) $(ASAN_VARS) all
	$(MAKE) $(TSAN_VARS) $(TSAN_BUILD)/switchyard $(patsubst tests/tools/%.c,$(TSAN_BUILD)/tools/%,$(TOOL_SRC))
	/usr/bin/python3 tests/run_all.py --build $(ASAN_BUILD) --tsan-build $(TSAN_BUILD)

clean:
	rm -rf build build-asan build-tsan

# Benchmarks, not part of `make test`: direct vs switchyard vs peer proxies on this machine,
# one table per script (BENCH_SECONDS, BENCH_ROUNDS: see bench/*.sh).
.PHONY: bench fuzz
bench: $(BUILD)/switchyard
	SWITCHYARD_BIN=$(abspath $(BUILD))/switchyard bench/pg_bench.sh
	SWITCHYARD_BIN=$(abspath $(BUILD))/switchyard bench/redis_bench.sh

# libFuzzer targets (fuzz/Makefile): build only, or run each for FUZZ_SECS seconds / FUZZ_RUNS
# executions, one after another.
FUZZ_SECS ?=
FUZZ_RUNS ?=
fuzz:
	$(MAKE) -C fuzz fuzz
ifneq ($(FUZZ_SECS)$(FUZZ_RUNS),)
	$(MAKE) -C fuzz run $(if $(FUZZ_RUNS),RUNS=$(FUZZ_RUNS),SECS=$(FUZZ_SECS))
endif
