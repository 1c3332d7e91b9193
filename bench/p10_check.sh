#!/usr/bin/env bash
# `duckpart_bench --p10-stores` compares P2 and P5 on the stores of earlier runs, in one process:
# it keeps the stores, records each size's figures and ratios, and refuses a store whose rows do
# not match (one written with P6, which drops months).
set -euo pipefail
bench="$1"
dir="$2"
rm -rf "$dir"
mkdir -p "$dir"
for spec in "120000 2 s1" "360000 6 s3"; do
  set -- $spec
  "$bench" --rows "$1" --months "$2" --reps 1 --batch 60000 --scenarios p2 --dir "$dir/$3" > /dev/null 2> "$dir/$3.err" ||
    { echo "writing the store $3 failed:"; cat "$dir/$3.err"; exit 1; }
done
out="$dir/p10.json"
"$bench" --p10-stores "120000:2:$dir/s1,360000:6:$dir/s3" --reps 3 --batch 60000 > "$out" 2> "$dir/p10.err"
[ -d "$dir/s1/partitions" ] && [ -d "$dir/s3/partitions" ] || { echo "a store was deleted"; exit 1; }
for want in 'P2 3-month range aggregate at 120K rows over 2 months' 'P5 get_by_id at 360K rows over 6 months' \
            'P2 at 360K rows over 6 months / at 120K rows, in the same round' \
            'P5 median at 360K rows over 6 months / at 120K rows, in the same round'; do
  grep -q "\"scenario\":\"$want" "$out" || { echo "missing figure: $want"; cat "$out"; exit 1; }
done
if grep -q '"median":0.0000,' "$out"; then echo "a zero figure"; cat "$out"; exit 1; fi
# A store with other rows than said is refused, by name.
if "$bench" --p10-stores "120000:2:$dir/s1,400000:6:$dir/s3" --reps 1 --batch 60000 > /dev/null 2> "$dir/bad.err"; then
  echo "a store with the wrong row count was accepted"; exit 1
fi
grep -q "holds 360000 rows, not 400000" "$dir/bad.err" || { echo "unclear error:"; cat "$dir/bad.err"; exit 1; }
# And one with other months than said (the ids would still be found).
if "$bench" --p10-stores "120000:2:$dir/s1,360000:5:$dir/s3" --reps 1 --batch 60000 > /dev/null 2> "$dir/bad.err"; then
  echo "a store with the wrong month count was accepted"; exit 1
fi
grep -q "has 6 monthly partitions, not 5" "$dir/bad.err" || { echo "unclear error:"; cat "$dir/bad.err"; exit 1; }
echo "p10 stores ok"
