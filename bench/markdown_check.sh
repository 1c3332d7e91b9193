#!/usr/bin/env bash
# `duckpart_bench --markdown F` replaces only the block between its markers in F and keeps the rest
# (docs/performance.md holds the analysis of earlier runs around the generated table).
set -euo pipefail
bench="$1"
dir="$2"
rm -rf "$dir"
mkdir -p "$dir"
f="$dir/perf.md"
printf '# title\n\nanalysis above\n\n<!-- bench:begin (written by duckpart_bench) -->\nOLD TABLE\n<!-- bench:end -->\n\nanalysis below\n' > "$f"
"$bench" --rows 100000 --months 12 --reps 1 --scenarios none --dir "$dir/data" --markdown "$f" > /dev/null
grep -q '^analysis above$' "$f" || { echo "text above the table was lost"; exit 1; }
grep -q '^analysis below$' "$f" || { echo "text below the table was lost"; exit 1; }
grep -q '^| P1 | bulk ingest' "$f" || { echo "no P1 row in the generated table"; exit 1; }
if grep -q 'OLD TABLE' "$f"; then echo "the old table was kept"; exit 1; fi
[ "$(grep -c 'bench:begin' "$f")" = 1 ] || { echo "markers duplicated"; exit 1; }
# A file without markers gets the table appended, its text kept.
printf 'plain notes\n' > "$dir/plain.md"
"$bench" --rows 100000 --months 12 --reps 1 --scenarios none --dir "$dir/data2" --markdown "$dir/plain.md" > /dev/null
head -1 "$dir/plain.md" | grep -q '^plain notes$' || { echo "plain file text lost"; exit 1; }
grep -q '^| P1 | bulk ingest' "$dir/plain.md" || { echo "no table appended"; exit 1; }
echo "markdown splice ok"
