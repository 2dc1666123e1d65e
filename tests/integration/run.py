#!/usr/bin/python3
"""
run.py - the integration test runner.

    /usr/bin/python3 tests/integration/run.py [--list] [SUBSTRING...]

Discovers tests/integration/test_*.py and the test_* functions in each (in source order),
keeps those whose "module.function" name contains any SUBSTRING (all when none), and runs
each with a shared harness.Context (the Postgres clusters start on first use). Prints
`PASS name (1.2s)` or `FAIL name: reason`, then exactly one summary line
`N passed, N failed`; exits 1 if anything failed.

Every test has a deadline (120 s, or the function's `timeout` attribute, times
SY_TIMEOUT_SCALE if set): past it the test fails with a timeout and its processes are
stopped. Processes a test starts are cleaned up when it ends; a switchyard the test left
running is stopped then, and a sanitizer report in its log fails the test.

SWITCHYARD_BIN and SWITCHYARD_TOOLS default to build-asan/ in this checkout.
"""

import importlib
import inspect
import os
import signal
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

os.environ.setdefault("SWITCHYARD_BIN", os.path.join(ROOT, "build-asan", "switchyard"))
os.environ.setdefault("SWITCHYARD_TOOLS", os.path.join(ROOT, "build-asan", "tools"))

import harness  # noqa: E402

DEFAULT_TIMEOUT = 120.0


class TestTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise TestTimeout("timed out")


def discover(filters):
    tests = []
    for fn in sorted(os.listdir(HERE)):
        if not (fn.startswith("test_") and fn.endswith(".py")):
            continue
        modname = fn[:-3]
        try:
            mod = importlib.import_module(modname)
        except Exception:
            # A module that does not import is a failure of everything in it.
            err = traceback.format_exc()

            def broken(ctx, err=err):
                raise harness.TestFailure("module does not import:\n" + err)
            tests.append((modname + ".<import>", broken))
            continue
        funcs = []
        for name, obj in vars(mod).items():
            if name.startswith("test_") and inspect.isfunction(obj) and obj.__module__ == modname:
                funcs.append((inspect.getsourcelines(obj)[1], name, obj))
        for _line, name, obj in sorted(funcs):
            tests.append(("%s.%s" % (modname, name), obj))
    if filters:
        tests = [t for t in tests if any(f in t[0] for f in filters)]
    return tests


def reason_of(exc):
    if isinstance(exc, TestTimeout):
        return "timed out"
    if isinstance(exc, harness.TestFailure):
        return str(exc) or "failed"
    if isinstance(exc, AssertionError):
        # a bare assert: say where
        tb = traceback.extract_tb(exc.__traceback__)
        where = ""
        for fr in reversed(tb):
            if os.path.basename(fr.filename).startswith("test_"):
                where = "%s:%d: %s" % (os.path.basename(fr.filename), fr.lineno, fr.line)
                break
        return (str(exc) + " " if str(exc) else "") + "(assert at " + where + ")"
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).strip()


def print_result(ok, name, secs, reason=""):
    if ok:
        print("PASS %s (%.1fs)" % (name, secs), flush=True)
    else:
        lines = (reason or "failed").splitlines() or ["failed"]
        print("FAIL %s: %s (%.1fs)" % (name, lines[0], secs), flush=True)
        for l in lines[1:80]:
            print("    " + l, flush=True)
        if len(lines) > 80:
            print("    ... (%d more lines)" % (len(lines) - 80), flush=True)


def main(argv):
    if "--list" in argv:
        for name, _ in discover([a for a in argv if a != "--list"]):
            print(name)
        return 0
    tests = discover(argv)
    scale = float(os.environ.get("SY_TIMEOUT_SCALE", "1"))
    ctx = harness.Context()
    signal.signal(signal.SIGALRM, _alarm)
    passed = failed = 0
    t_all = time.monotonic()
    for name, fn in tests:
        timeout = float(getattr(fn, "timeout", DEFAULT_TIMEOUT)) * scale
        harness.push_scope()
        t0 = time.monotonic()
        err = None
        try:
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                fn(ctx)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # noqa: B902 - any exception is this test's failure
            err = reason_of(e)
            if isinstance(e, TestTimeout):
                err = "timed out after %.0fs" % timeout
        try:
            cleanup_errors = harness.pop_scope()
        except Exception as e:
            cleanup_errors = ["cleanup failed: %s" % e]
        if cleanup_errors and err is None:
            err = "; ".join(cleanup_errors)
        elif cleanup_errors:
            err += "\n(also at cleanup) " + "; ".join(cleanup_errors)
        try:
            ctx.alive_check()
        except Exception as e:
            err = (err + "\n" if err else "") + "shared cluster died and did not restart: %s" % e
        secs = time.monotonic() - t0
        if err is None:
            passed += 1
            print_result(True, name, secs)
        else:
            failed += 1
            print_result(False, name, secs, err)
    if not tests:
        print("no tests matched %s" % (" ".join(argv) or "(none found)"), flush=True)
        failed += 1
    print("# integration: %.0fs" % (time.monotonic() - t_all), file=sys.stderr, flush=True)
    print("%d passed, %d failed" % (passed, failed), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
