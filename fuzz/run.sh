#!/usr/bin/env bash
# Runs every fuzz target for SECS seconds each (default 120), one after the other, and
# prints one summary line per target. Needs cargo-fuzz (`cargo install cargo-fuzz`); on a
# stable toolchain RUSTC_BOOTSTRAP=1 lets it pass the sanitizer flags.
#
#   fuzz/run.sh [SECS] [TARGET...]
#
# Limits: -rss_limit_mb=1024 and -malloc_limit_mb=64 (any single allocation above 64 MiB
# is reported as a crash: bodies are at most 64 KiB here, so that would be unbounded
# growth). Parser targets start from tests/fixtures (and fuzz/seeds) with fuzz/json.dict.
# New corpus entries go to fuzz/corpus/<target>, crashes to fuzz/artifacts/<target>,
# the full libFuzzer output to fuzz/logs/<target>.log (all three ignored by git).
set -uo pipefail
cd "$(dirname "$0")/.."
secs="${1:-120}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(goapi_webhook goapi_task_object nca_callback nca_status standard_webhooks shared_secret callback_token)
fi
limits=(-max_total_time="$secs" -rss_limit_mb=1024 -malloc_limit_mb=64 -print_final_stats=1)
json=(-dict=fuzz/json.dict -max_len=65536)
mkdir -p fuzz/logs
failed=0
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    case "$t" in
        goapi_webhook | goapi_task_object) dirs=(tests/fixtures/goapi); extra=("${json[@]}") ;;
        nca_callback) dirs=(tests/fixtures/nca); extra=("${json[@]}") ;;
        nca_status) dirs=(fuzz/seeds/nca_status tests/fixtures/nca); extra=("${json[@]}") ;;
        *) dirs=(); extra=() ;;
    esac
    RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" "fuzz/corpus/$t" "${dirs[@]}" -- \
        "${limits[@]}" "${extra[@]}" >"fuzz/logs/$t.log" 2>&1
    status=$?
    stat() { grep -m1 "^stat::$1:" "fuzz/logs/$t.log" | awk '{print $2}'; }
    corpus=$(grep -E "^#[0-9]+[[:space:]]+DONE" "fuzz/logs/$t.log" | tail -1 | grep -oE "corp: [0-9]+/[0-9]+[a-zA-Z]*" || true)
    if [ "$status" -eq 0 ]; then result="no finding"; else result="FAILED (exit $status), see fuzz/logs/$t.log"; failed=1; fi
    printf '%-18s %6ss  runs %10s  exec/s %7s  peak RSS %5s MB  %-18s %s\n' \
        "$t" "$secs" "$(stat number_of_executed_units)" "$(stat average_exec_per_sec)" \
        "$(stat peak_rss_mb)" "$corpus" "$result"
done
exit "$failed"
