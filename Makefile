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

all: $(BUILD)/switchyard $(UNIT_BIN) $(TOOL_BIN) $(BUILD)/tools/fault_inject.so

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
$(BUILD)/tests/test_pg_cancel: $(BUILD)/proxy/pg/pg_cancel.o
# ... and makes the cancel-key table's calloc fail (out of memory) through a wrapper.
$(BUILD)/tests/test_pg_cancel: LDFLAGS += -Wl,--wrap=calloc

# LD_PRELOAD fault injection for the tests (tests/preload/): plain, no sanitizer.
$(BUILD)/tools/fault_inject.so: tests/preload/fault_inject.c
	@mkdir -p $(dir $@)
	$(CC) -O1 -g -shared -fPIC -Wall -o $@ $< -ldl

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
# one table per script (BENCH_SECONDS, BENCH_ROUNDS: see bench/*.sh); each also writes its
# medians to bench/out/*.dat, and bench/plot.sh draws them into bench/out/*.png (gnuplot).
.PHONY: bench fuzz
bench: $(BUILD)/switchyard
	SWITCHYARD_BIN=$(abspath $(BUILD))/switchyard bench/pg_bench.sh
	SWITCHYARD_BIN=$(abspath $(BUILD))/switchyard bench/redis_bench.sh
	SWITCHYARD_BIN=$(abspath $(BUILD))/switchyard bench/idle_bench.sh
	bench/plot.sh

# ---- install and Debian package ---------------------------------------------------------
#   make install [PREFIX=/usr/local] [DESTDIR=]   the binary, /etc/switchyard/switchyard.conf
#                                                 (never overwritten), the man page, the
#                                                 systemd unit, the docs and examples
#   make deb                                      switchyard_<version>_<arch>.deb, with dpkg-deb
PREFIX     ?= /usr/local
DESTDIR    ?=
BINDIR     ?= $(PREFIX)/bin
MANDIR     ?= $(PREFIX)/share/man
DOCDIR     ?= $(PREFIX)/share/doc/switchyard
SYSCONFDIR ?= /etc
UNITDIR    ?= /lib/systemd/system
SY_VERSION := $(shell sed -n 's/^\#define SY_VERSION "\(.*\)"/\1/p' proxy/core/sy.h)
DOCS       := README.md $(wildcard docs/*.md) conf/switchyard.conf.example
EXAMPLES   := contrib/supervisord.conf contrib/Dockerfile contrib/docker-entrypoint.sh
# The tests install the binary under test as it is (INSTALL_BIN=...), never rebuilding it.
INSTALL_BIN ?= $(BUILD)/switchyard

.PHONY: install deb
install: $(INSTALL_BIN)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(UNITDIR) \
	  $(DESTDIR)$(DOCDIR)/examples $(DESTDIR)$(SYSCONFDIR)/switchyard
	install -m 0755 $(INSTALL_BIN) $(DESTDIR)$(BINDIR)/switchyard
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/switchyard/switchyard.conf ]; then \
	  echo "install: keeping the existing $(DESTDIR)$(SYSCONFDIR)/switchyard/switchyard.conf"; \
	else \
	  echo "install -m 0644 conf/switchyard.conf $(DESTDIR)$(SYSCONFDIR)/switchyard/switchyard.conf"; \
	  install -m 0644 conf/switchyard.conf $(DESTDIR)$(SYSCONFDIR)/switchyard/switchyard.conf; \
	fi
	gzip -9n < contrib/switchyard.1 > $(DESTDIR)$(MANDIR)/man1/switchyard.1.gz
	chmod 0644 $(DESTDIR)$(MANDIR)/man1/switchyard.1.gz
	sed 's|@BINDIR@|$(BINDIR)|g' contrib/switchyard.service.in > $(DESTDIR)$(UNITDIR)/switchyard.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/switchyard.service
	install -m 0644 $(DOCS) $(DESTDIR)$(DOCDIR)/
	install -m 0644 $(EXAMPLES) $(DESTDIR)$(DOCDIR)/examples/

# The package is built from the release build (build/), staged with `make install`.
DEB_ARCH  := $(shell dpkg --print-architecture 2>/dev/null)
DEB_STAGE := $(BUILD)/deb
DEB_FILE  := switchyard_$(SY_VERSION)_$(DEB_ARCH).deb

deb: $(BUILD)/switchyard
	rm -rf $(DEB_STAGE) && mkdir -p $(DEB_STAGE)/root/DEBIAN $(DEB_STAGE)/debian
	$(MAKE) --no-print-directory install BUILD=$(BUILD) INSTALL_BIN=$(BUILD)/switchyard DESTDIR=$(abspath $(DEB_STAGE))/root PREFIX=/usr
	strip --strip-unneeded $(DEB_STAGE)/root/usr/bin/switchyard
	echo "Source: switchyard" > $(DEB_STAGE)/debian/control
	cd $(DEB_STAGE) && dpkg-shlibdeps -O root/usr/bin/switchyard | sed -n 's/^shlibs:Depends=//p' > depends
	test -s $(DEB_STAGE)/depends
	sed -e 's|@VERSION@|$(SY_VERSION)|' -e 's|@ARCH@|$(DEB_ARCH)|' \
	  -e "s|@DEPENDS@|$$(cat $(DEB_STAGE)/depends), adduser|" \
	  -e "s|@SIZE@|$$(du -sk $(DEB_STAGE)/root | cut -f1)|" \
	  contrib/debian/control.in > $(DEB_STAGE)/root/DEBIAN/control
	install -m 0644 contrib/debian/conffiles $(DEB_STAGE)/root/DEBIAN/conffiles
	install -m 0755 contrib/debian/postinst contrib/debian/postrm $(DEB_STAGE)/root/DEBIAN/
	dpkg-deb --root-owner-group --build $(DEB_STAGE)/root $(DEB_FILE)
	dpkg-deb --info $(DEB_FILE) | sed -n '/Package:/,$$p'

# libFuzzer targets (fuzz/Makefile): build only, or run each for FUZZ_SECS seconds / FUZZ_RUNS
# executions, one after another.
FUZZ_SECS ?=
FUZZ_RUNS ?=
fuzz:
	$(MAKE) -C fuzz fuzz
ifneq ($(FUZZ_SECS)$(FUZZ_RUNS),)
	$(MAKE) -C fuzz run $(if $(FUZZ_RUNS),RUNS=$(FUZZ_RUNS),SECS=$(FUZZ_SECS))
endif
