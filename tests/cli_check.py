"""What the moelab-cli end-to-end tests (test_cli.py, test_cli_memory.py) share: running the
command line, counting checks, and the one-line error rule (the exit code, and a single line on
stderr that holds every expected word). A test calls start(cli) first and finish() last."""
import os
import subprocess
import sys

_cli = None
failures = []
passed = 0


def start(cli):
    global _cli
    _cli = cli


def run(*args, limit=None):
    """moelab-cli ARGS with its output captured (invalid UTF-8 replaced), at most 120 s. The
    caller's MOELAB_MEMORY_LIMIT is not passed on; `limit` ("12G") sets it (a smaller machine)."""
    env = dict(os.environ)
    env.pop("MOELAB_MEMORY_LIMIT", None)
    if limit:
        env["MOELAB_MEMORY_LIMIT"] = limit
    return subprocess.run([_cli, *args], capture_output=True, text=True, errors="replace", timeout=120, env=env)


def check(name, cond, detail=""):
    global passed
    if cond:
        passed += 1
    else:
        failures.append(f"{name}: {detail}")
        print(f"FAILED {name}: {detail}", file=sys.stderr)


def check_error(name, r, code, needles):
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    ok = r.returncode == code and len(lines) == 1 and all(n in r.stderr for n in needles)
    check(name, ok, f"exit {r.returncode}, stderr {r.stderr!r}")


def finish():
    print(f"{passed} passed, {len(failures)} failed")
    sys.exit(1 if failures else 0)
