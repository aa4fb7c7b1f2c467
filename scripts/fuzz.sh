#!/usr/bin/env bash
# Build the libFuzzer targets (tests/fuzz, docs/FUZZING.md) with clang and
# run each for a bounded time from its seed corpus.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]      (default 60)
#
# Exits non-zero if a target finds a crash, a leak, a timeout or a model
# mismatch; the input that did it is left in build-fuzz/artifacts/<target>/
# (replay it: build-fuzz/tests/fuzz/<target> <file>).  The corpus grows in
# build-fuzz/corpus/<target>/ (a copy: the committed seeds are not touched).
# Environment: FUZZ_TARGETS (default "fuzz_api fuzz_dmirror"), CC (default
# clang), FUZZ_JOBS (parallel build jobs, default 2), FUZZ_SEED (libFuzzer's
# -seed: CI fixes it so that a run explores the same inputs each time and a
# red run is one a change caused; by hand leave it unset, to explore).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
targets=${FUZZ_TARGETS:-fuzz_api fuzz_dmirror}
export CC=${CC:-clang}
B=build-fuzz

cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Debug -DUHMM_WERROR=ON -DUHMM_FUZZ=ON \
	-DUHMM_SANITIZE=address,undefined >/dev/null
# shellcheck disable=SC2086
cmake --build "$B" -j"${FUZZ_JOBS:-2}" --target $targets >/dev/null

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
for t in $targets; do
	bin=$(find "$B" -type f -name "$t" -perm -u+x | head -n1)
	[ -n "$bin" ] || { echo "fuzz.sh: $t was not built (is UHMM_FUZZ wired in?)" >&2; exit 2; }
	corpus=$B/corpus/$t
	art=$B/artifacts/$t
	mkdir -p "$corpus" "$art"
	cp -n tests/fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null || true
	# Known reproducers first: each must pass now (fixed bugs stay fixed).
	regress=$(ls tests/fuzz/regress/"${t#fuzz_}"-*.bin 2>/dev/null || true)
	if [ -n "$regress" ]; then
		echo "=== $t: regression inputs"
		# shellcheck disable=SC2086
		if ! "$bin" -timeout=30 $regress >"$art/regress.log" 2>&1; then
			tail -n 40 "$art/regress.log"
			echo "fuzz.sh: $t fails a regression input" >&2
			status=1
			continue
		fi
	fi
	echo "=== $t: ${secs}s"
	# shellcheck disable=SC2086
	if "$bin" ${FUZZ_SEED:+-seed=$FUZZ_SEED} -max_total_time="$secs" -timeout=30 \
		-rss_limit_mb=4096 -max_len=512 \
		-print_final_stats=1 -artifact_prefix="$art/" "$corpus" >"$art/fuzz.log" 2>&1; then
		grep -E '^#[0-9]+[[:space:]]+DONE' "$art/fuzz.log" | tail -n1 || true
		grep -E '^stat::(number_of_executed_units|average_exec_per_sec)' "$art/fuzz.log" || true
	else
		tail -n 60 "$art/fuzz.log"
		echo "fuzz.sh: $t found a problem; input in $art/" >&2
		status=1
	fi
done
exit $status
