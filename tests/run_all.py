#!/usr/bin/python3
"""
run_all.py - the whole suite: unit test binaries, then the integration tests.

    /usr/bin/python3 tests/run_all.py --build build-asan [--tsan-build build-tsan] [INTEGRATION FILTERS...]

Runs every DIR/tests/test_* binary (each prints "name: N passed, N failed"; a binary that
crashes or prints no such line counts as one failure), then tests/integration/run.py with
SWITCHYARD_BIN=DIR/switchyard and SWITCHYARD_TOOLS=DIR/tools, adds everything up and prints
one final line "N passed, N failed". Exits non-zero if anything failed.

With --tsan-build, the tests that drive sessions on several worker loops at once (switchover,
console, cancel, load, metrics) run a second time against the ThreadSanitizer build; a data
race report in switchyard's log fails the test like any sanitizer report.
"""

import argparse
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SUMMARY = re.compile(r"^(?:(\S+): )?(\d+) passed, (\d+) failed\s*$")
UNIT_TIMEOUT = 600
TSAN_TESTS = ["test_workers", "test_switch_", "test_redis_load", "test_pg_basic", "test_metrics", "test_cli",
              "test_session_core", "test_redis_sentinel"]


def run_units(build):
    passed = failed = 0
    d = os.path.join(build, "tests")
    bins = sorted(f for f in os.listdir(d)) if os.path.isdir(d) else []
    bins = [os.path.join(d, f) for f in bins
            if f.startswith("test_") and os.access(os.path.join(d, f), os.X_OK)
            and os.path.isfile(os.path.join(d, f))]
    for b in bins:
        name = os.path.basename(b)
        try:
            r = subprocess.run([b], capture_output=True, text=True, timeout=UNIT_TIMEOUT, cwd=ROOT)
            out, err, rc = r.stdout, r.stderr, r.returncode
        except subprocess.TimeoutExpired as e:
            out, err, rc = (e.stdout or b"").decode("utf-8", "replace") if isinstance(e.stdout, bytes) else (e.stdout or ""), "timed out after %ds" % UNIT_TIMEOUT, None
        sys.stdout.write(out)
        if err:
            sys.stderr.write(err)
        found = None
        for line in out.splitlines():
            m = SUMMARY.match(line.strip())
            if m:
                found = (int(m.group(2)), int(m.group(3)))
        if found is None:
            print("FAIL %s: exited %s without a summary line" % (name, rc), flush=True)
            failed += 1
            continue
        p, f = found
        if rc != 0 and f == 0:
            print("FAIL %s: exited %s although it reported no failures" % (name, rc), flush=True)
            f = 1
        passed += p
        failed += f
    return passed, failed, len(bins)


def run_integration(build, filters):
    env = dict(os.environ)
    env["SWITCHYARD_BIN"] = os.path.join(build, "switchyard")
    env["SWITCHYARD_TOOLS"] = os.path.join(build, "tools")
    p = subprocess.Popen(["/usr/bin/python3", os.path.join(HERE, "integration", "run.py")] + filters,
                         env=env, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    last = None
    for line in p.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        m = SUMMARY.match(line.strip())
        if m and m.group(1) is None:
            last = (int(m.group(2)), int(m.group(3)))
    rc = p.wait()
    if last is None:
        print("FAIL integration: runner exited %s without a summary line" % rc, flush=True)
        return 0, 1
    if rc != 0 and last[1] == 0:
        print("FAIL integration: runner exited %s although it reported no failures" % rc, flush=True)
        return last[0], 1
    return last


def main():
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--build", required=True, help="build directory (e.g. build-asan)")
    ap.add_argument("--no-integration", action="store_true")
    ap.add_argument("--tsan-build", help="ThreadSanitizer build directory (e.g. build-tsan)")
    ap.add_argument("filters", nargs="*", help="integration test name substrings")
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    up, uf, nbins = run_units(build)
    print("# unit: %d binaries, %d passed, %d failed" % (nbins, up, uf), flush=True)
    ip = ifail = 0
    if not a.no_integration:
        ip, ifail = run_integration(build, a.filters)
        if a.tsan_build:
            print("# integration again under ThreadSanitizer: %s" % " ".join(TSAN_TESTS), flush=True)
            tp, tf = run_integration(os.path.abspath(a.tsan_build), a.filters or TSAN_TESTS)
            ip, ifail = ip + tp, ifail + tf
    passed, failed = up + ip, uf + ifail
    print("%d passed, %d failed" % (passed, failed), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
