#!/bin/sh
# Runs every unit test binary in the directory given, prints each one's
# cmocka output, and ends with one line "unit: N passed, M failed" that
# counts test cases over all binaries.  A binary that dies before its
# summary (a sanitizer report, a crash) counts as one failed test on top
# of what it reported.  Exits 1 if anything failed.
set -u

dir=${1:?usage: run-tests.sh DIR}
passed=0
failed=0
out=$(mktemp)
trap 'rm -f "$out"' EXIT

for t in "$dir"/test_*; do
    [ -x "$t" ] || continue
    echo "== ${t##*/}"
    "$t" >"$out" 2>&1
    rc=$?
    cat "$out"
    p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test(s)\./\1/p' "$out")
    f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test(s), listed below:/\1/p' \
        "$out")
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-0}))
    if [ "$rc" -ne 0 ] && [ "${f:-0}" -eq 0 ]; then
        echo "[  FAILED  ] ${t##*/} exited with status $rc"
        failed=$((failed + 1))
    fi
done

echo "unit: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
