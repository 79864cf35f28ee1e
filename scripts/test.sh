#!/usr/bin/env bash
# Installs dependencies, builds, and runs every test (unit and integration). The last line of the output is
# "N passed, N failed", counting individual test cases (TAP lines) across all test programs.
set -uo pipefail
cd "$(dirname "$0")/.."
build=${LVD_BUILD_DIR:-build}
scripts/bootstrap.sh "$build" || { echo "0 passed, 1 failed"; exit 1; }

meson test -C "$build" --print-errorlogs --num-processes 2 ${LVD_TEST_ARGS:-}
status=$?

# Count test cases from the TAP output meson recorded for each test program.
/usr/bin/python3 - "$build/meson-logs/testlog.json" <<'PY'
import json, re, sys
passed = failed = 0
for line in open(sys.argv[1]):
    t = json.loads(line)
    out = t.get("stdout") or ""
    ok = len(re.findall(r"^ok \d+", out, re.M))
    bad = len(re.findall(r"^not ok \d+", out, re.M))
    plan = re.search(r"^1\.\.(\d+)", out, re.M)
    if t.get("result") not in ("OK", "EXPECTEDFAIL", "SKIP") and bad == 0:
        bad = 1  # crashed or timed out without reporting a failing case
    if plan and ok + bad < int(plan.group(1)):
        bad += int(plan.group(1)) - ok - bad  # cases that never ran
    if bad:
        print("FAILED: %s (%d failing case(s))" % (t["name"], bad))
    passed += ok
    failed += bad
print("%d passed, %d failed" % (passed, failed))
PY
exit $status
