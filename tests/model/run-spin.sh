#!/usr/bin/env bash
# run-spin.sh - check the Promela models of the page protocol (page.pml) and
# of eviction (evict.pml) with spin, exhaustively, and check that the checks
# can fail.
#
#   tests/model/run-spin.sh             the checks below (ctest); exit 0 iff
#                                       all pass
#   tests/model/run-spin.sh --bug       only the STALE_INSTALL mutation, with
#                                       spin's counterexample printed
#   tests/model/run-spin.sh --discard   the larger discard configuration
#                                       (below; about 10 minutes: not in
#                                       ctest)
#   tests/model/run-spin.sh --evict     the eviction model, evict.pml
#                                       (below; ctest model.spin.evict)
#   tests/model/run-spin.sh --evict-full  its larger configurations (about
#                                       3 minutes: not in ctest)
#   tests/model/run-spin.sh --huge      the device huge page's split, huge.pml
#                                       (below; ctest model.spin.huge)
#   tests/model/run-spin.sh --coherent  a coherent reclaim's unsharing
#                                       populate racing a discard,
#                                       coherent.pml, and a discard of a
#                                       coherent page in place racing its
#                                       migrations, cohdiscard.pml (below;
#                                       ctest model.spin.coherent)
#   tests/model/run-spin.sh --readmostly  the read-mostly model,
#                                       readmostly.pml (below; ctest
#                                       model.spin.readmostly)
#   tests/model/run-spin.sh --remake    the page remake, remake.pml (below;
#                                       ctest model.spin.remake)
#   options: --workdir DIR (where pan is built and run; default: a fresh
#            temporary directory, removed at the end), --keep (keep it)
#   environment: SPIN (spin), CC (cc), SPIN_TIMEOUT (seconds a check may
#            take, default 900), SPIN_MEMLIM (MB pan may use, default 4096;
#            14000 with --discard)
#   exit: 0 all passed (--bug: the mutation was caught), 1 a check failed,
#         2 usage, 77 spin or the compiler missing (ctest: skipped)
#
# Checks (docs/ARCHITECTURE.md, "The model-checked page protocol"):
#   safety      assertions (no lost update, no zero fill over data) and
#               invalid end states (deadlock, lost wake-up): must pass
#   liveness    non-progress cycles (livelock): must pass
#   mutations   must FAIL, or the checks above prove nothing:
#     stale-install  (-DSTALE_INSTALL) an assertion: a lost device atomic
#     lost-kick      (-DLOST_KICK) an invalid end state: a parked fault
#                    whose thread sleeps for ever
#     device-unbounded (-DDEV_TRIES=0) a non-progress cycle: the CPU and
#                    the device taking the page from each other for ever
#   discard     (-DDISCARD: thread 1 discards the page, then loads) safety:
#               must pass; and its mutations, which must fail:
#     rf-takes-zapped (-DRF_TAKES_ZAPPED) an assertion: a device range
#                    fault returns as final a device page a REMOVE marked
#                    ZAPPED while another thread held it (fixed in
#                    12aa339); the device reads the discarded data
#     early-inv-end  (-DEARLY_INV_END) an assertion: the REMOVE's
#                    invalidation ends before uhmm's state is zapped
#                    (fixed in 8c14cbf)
#     no-cas         (-DNO_CAS) an assertion: publish_unlock stores the word
#                    computed from its first look, a ZAPPED set after it is
#                    lost
#     no-zap-discard (-DNO_ZAP_DISCARD) an assertion: a ZAPPED system page
#                    unlocked without PG_DISCARD
#   --discard only (about 10 minutes: not in ctest):
#     discard-stay (-DDISCARD -DTO_DEV_TWICE -DONLY_ENTRY_CHECK) must pass:
#               the holder is a uhmm_migrate(device) that finds the page
#               there and unlocks it without an invalidation; the device's
#               entry at rest must lead to the page's copy
#     stay-rf-takes-zapped  the same with -DRF_TAKES_ZAPPED: must fail (the
#               device keeps an entry to the released device page)
# --evict (evict.pml: a requester evicting a victim page from a full
# device while a CPU fault, a migration home and the device's lane race on
# it; docs/ARCHITECTURE.md, "Eviction in the model"):
#   evict       safety: must pass (one requester, the migrator home, the CPU
#               thread, the lane)
#   evict-liveness  non-progress cycles: must pass
#   evict-two   safety with -DTWO_REQ -DNO_HOMER (two requesters evicting
#               each other's pages, racing for the frame): must pass
#   mutations, must FAIL:
#     early-frame-free (-DTWO_REQ -DNO_HOMER -DEARLY_FRAME_FREE) an
#                    assertion: the victim's frame is freed when it is
#                    taken, before the invalidation and fence; the other
#                    requester moves its page in: V's data is lost
#     early-free-entry the same with -DONLY_ENTRY_CHECK (data checks off):
#                    the lane accesses V's frame through V's stale entry
#                    after it was freed
#     blocking-evict (-DBLOCKING_EVICT) an invalid end state: the victim
#                    taken with a blocking lock; the requester holds P and
#                    waits for V, the migrator home holds V and waits for P
#     no-recheck     (-DNO_RECHECK) an assertion: a victim taken is evicted
#                    without looking whether it is still on the device; it
#                    came home and the CPU wrote it: the write is lost
#     no-timeout     (-DTWO_REQ -DNO_HOMER -DNO_TIMEOUT -DEVICT_TRIES=3)
#                    an invalid end state: the back-off waits for a frame
#                    freed only; the busy victim was being moved onto the
#                    device, nothing is freed, the requester sleeps for ever
#     evict-unbounded (-DEVICT_TRIES=0) a non-progress cycle: a requester
#                    retrying for ever while its victim stays busy
#     nothing-enomem (-DNOTHING_ENOMEM) an assertion: a walk that finds no
#                    victim fails -ENOMEM without looking whether a frame
#                    was freed meanwhile (as committed at aabe1cb); the
#                    victim came home, the frame is free, the request fails
#                    though it fits
#     locked-not-busy (-DTWO_REQ -DNO_HOMER -DLOCKED_NOT_BUSY) an
#                    assertion: a page held on its way onto the device is no
#                    victim and not busy either (as at aabe1cb); the walk
#                    finds nothing, -ENOMEM while the other request copies
# --huge (huge.pml: a 2 MiB device unit of two pages; a 4 KiB migration
# home of one page races a CPU fault on the other half while the device's
# lane and fault thread use and remap the block; docs/ARCHITECTURE.md,
# "Device huge pages"):
#   huge        safety: must pass
#   mutations, must FAIL:
#     no-split-wait  (-DNO_SPLIT_WAIT) an assertion: a page that finds the
#                    other half's split in progress frees its frame at
#                    once, a 4 KiB free of a frame of a chunk still HUGE
#     no-pt-split    (-DNO_PT_SPLIT) an assertion: the invalidation of one
#                    page leaves the 2 MiB entry; the device keeps an entry
#                    to frames released
# --coherent (coherent.pml: the reclaim of a coherent page a fork child
# shares, which writes it in place (MADV_POPULATE_WRITE) while holding it,
# racing an application discard and a store after it; docs/ARCHITECTURE.md,
# "Coherent device memory"):
#   coherent    safety: must pass (nobody asleep for ever; the store after
#               the discard kept, the old data gone)
#   coherent-liveness  non-progress cycles: must pass
#   mutations, must FAIL:
#     no-serve       (-DNO_SERVE) an invalid end state: a fault on the page
#                    in populate is parked like any (the code before the
#                    fix): the populate's own fault is never served
#     no-unzap       (-DNO_UNZAP) an assertion: the zero-fill leaves
#                    ZAPPED; the page moved out, with the store made after
#                    the discard, is dropped at the publication
#     no-poplock     (-DNO_POPLOCK) an assertion: the look at PG_POPULATE
#                    and the fill are two steps; the fill lands after the
#                    reclaim moved the page out: zeros present at the
#                    address of a page on the device
#   and cohdiscard.pml (an application discard of a coherent page in
#   place racing migrations of it, home or to a device; docs/ARCHITECTURE.md,
#   "A discard of a coherent page in place in the model"):
#   coh-discard safety: must pass (after madvise returned the page reads
#               zeros or a later store, never the old data)
#   coh-discard-3 safety with -DMIGS=3 (three migrations): must pass
#   coh-discard-liveness  non-progress cycles: must pass
#   mutation, must FAIL:
#     no-coh-discard (-DNO_COH_DISCARD) an assertion: the unheld coherent
#                    page published a system page without DISCARD (page_zap
#                    before 6f6024b, or a publication dropping the mark); a
#                    migration to a device between the REMOVE's read and
#                    the zap carries the old data off, read again after
#                    madvise returned
# --readmostly (readmostly.pml: duplication of one page on two devices and
# its collapse by CPU stores and a device write; docs/ARCHITECTURE.md,
# "Read-mostly duplicates"):
#   readmostly  safety: must pass (a device access through its entry reads
#               the CPU page's current data; every store kept)
#   readmostly-dev-write  safety with -DDEV_WRITE: must pass
#   mutations, must FAIL:
#     late-protect   (-DLATE_PROTECT) an assertion: the duplication copies
#                    the page before write-protecting it; a CPU store during
#                    the duplication is lost to the device
#     early-unprotect (-DEARLY_UNPROTECT) an assertion: the collapse
#                    removes the protection before the invalidation; the
#                    store lands while a device reads its stale duplicate
#   readmostly-discard  safety with -DDISCARD -DDUPS=1 (an application
#               madvise races them: its REMOVE finds the page held or not):
#               must pass (no device access through a freed duplicate)
#   readmostly-discard-dev-write  the same with -DDEV_WRITE: must pass
#   mutation, must FAIL:
#     zap-unlock-no-inv (-DDISCARD -DDUPS=1 -DZAP_UNLOCK_NO_INV) an
#                    assertion: the unlock of a page the REMOVE found held
#                    frees its duplicates without an invalidation of its own
#                    (the code before uhmm__dup_drop_inv); a range fault
#                    after the REMOVE's invalidation installed an entry to
#                    a duplicate and the device reads the freed frame
#   readmostly-discard-fill  safety with -DDISCARD -DFILL -DDUPS=1 -DW=1 (a
#               fill of zeros may hold the page when the REMOVE marks it,
#               uhmm__page_unzap): must pass
#     unzap-keeps-dup (-DDISCARD -DFILL -DDUPS=1 -DW=1 -DUNZAP_KEEPS_DUP) an assertion:
#                    a fill of zeros held the page when the REMOVE marked
#                    it, cleared the mark and kept the duplicates (the code
#                    before uhmm__page_unzap dropped them); the device
#                    reads the discarded data
# --remake (remake.pml: a page UFFDIO_MOVE keeps refusing, taken by copy
# -- the copy out, the default: migrate.c "refused", exclusive.c
# grab_by_copy; -DREMAKE the remake it replaced, uhmm__remake_present --
# racing a CPU writer, a CPU reader and an application discard;
# docs/ARCHITECTURE.md, "The page remake in the model"):
#   copyout     safety: must pass (the code since this round's fifth session)
#   copyout-liveness  non-progress cycles: must pass
#   remake      safety with -DREMAKE: must pass (the copy back bracketed
#               against the event reads: the code from 7e85eac until the
#               copy out replaced it; see remake-as-committed)
#   remake-as-committed (-DREMAKE -DUNBRACKETED) must FAIL, an assertion: the copy
#               back as committed at a3f752d (one look at ZAPPED, EAGAIN
#               retries without one) brings the discarded data back after
#               the application's madvise returned
#   remake-relook (-DREMAKE -DUNBRACKETED -DRELOOK) must FAIL: a look again after
#               each EAGAIN is not enough (the copy lands between the
#               REMOVE's read, the zap, and its handling)
#   mutations of the copy out, must FAIL (assertions):
#     early-ownclear (-DEARLY_OWNCLEAR) PG_OWNDISC cleared without
#                    uhmm__events_wait: the own REMOVE taken for the
#                    application's, the page published DISCARD: data lost
#     ignore-zapped  (-DIGNORE_ZAPPED) the publication elsewhere ignores
#                    ZAPPED: the discarded data back after the discard
#     no-wp          (-DNO_WP) no write-protection: a store between the read
#                    and the DONTNEED lost
# --evict-full (not in ctest):
#   evict-two-homer  safety with -DTWO_REQ (and the migrator): must pass
#   evict-two-liveness  non-progress cycles with -DTWO_REQ -DNO_HOMER: must
#               pass
# A search that does not complete ("Search not completed" without an
# error, "max search depth too small", out of memory) is a failure.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
model=$here/page.pml   # --evict: evict.pml
SPIN=${SPIN:-spin}
CC=${CC:-cc}
SPIN_TIMEOUT=${SPIN_TIMEOUT:-900}
user_memlim=${SPIN_MEMLIM:-}
SPIN_MEMLIM=${SPIN_MEMLIM:-4096}
DEPTH=${SPIN_DEPTH:-10000}   # the searches reach depth < 300
HASH=25         # 2^25 slots: no rehashing on the way

only_bug=0 discard=0 evict=0 huge=0 coherent=0 keep=0 workdir=
while [ $# -gt 0 ]; do
	case $1 in
	--bug) only_bug=1 ;;
	--discard) discard=1 ;;
	--evict) evict=1 ;;
	--evict-full) evict=2 ;;
	--huge) huge=1 ;;
	--coherent) coherent=1 ;;
	--readmostly) evict=3 ;;
	--remake) evict=4 ;;
	--keep) keep=1 ;;
	--workdir) workdir=$2; shift ;;
	*) echo "usage: $0 [--bug | --discard | --evict | --evict-full | --huge | --coherent | --readmostly | --remake] [--keep] [--workdir DIR]" >&2; exit 2 ;;
	esac
	shift
done

# The larger discard configuration stores 100.7 M states (more than 4 GB).
if [ $discard = 1 ] && [ -z "$user_memlim" ]; then
	SPIN_MEMLIM=14000
fi

for tool in "$SPIN" "$CC"; do
	# 77: ctest's SKIP_RETURN_CODE (tests/model/CMakeLists.txt)
	command -v "$tool" >/dev/null || { echo "run-spin: $tool not found: skipped"; exit 77; }
done
if [ -z "$workdir" ]; then
	workdir=$(mktemp -d "${TMPDIR:-/tmp}/uhmm-spin.XXXXXX") || exit 2
	[ $keep = 1 ] || trap 'rm -rf "$workdir"' EXIT
else
	mkdir -p "$workdir" || exit 2
fi
echo "run-spin: $("$SPIN" -V 2>&1 | head -1); work directory $workdir"

failures=0
now() { date +%s.%N; }

# check NAME KIND EXPECT [spin -D options...]
#   KIND: safety | liveness.  EXPECT: pass, or the error spin must report.
check() {
	local name=$1 kind=$2 expect=$3
	shift 3
	local dir=$workdir/$name out cflags run
	rm -rf "$dir" && mkdir -p "$dir" || return 1
	out=$dir/pan.out
	# A check that must fail stops early: compiling pan with -O2 takes
	# longer than its search (seconds each on a loaded VM), and its hash
	# table need not be large.
	local opt=-O2 hash=$HASH
	if [ "$expect" != pass ]; then
		opt=-O0 hash=22
	fi
	if [ "$kind" = safety ]; then
		cflags="-DSAFETY"
		run="./pan -m$DEPTH -w$hash"
	else
		cflags="-DNP"
		run="./pan -l -m$DEPTH -w$hash"
	fi
	local t0 t1 rc
	t0=$(now)
	if ! (cd "$dir" && "$SPIN" -a "$@" "$model" >spin.out 2>&1); then
		cat "$dir/spin.out"
		echo "FAIL $name: spin could not generate the verifier"
		failures=$((failures + 1))
		return
	fi
	if ! (cd "$dir" && "$CC" $opt -w $cflags -DCOLLAPSE -DMEMLIM=$SPIN_MEMLIM \
		-o pan pan.c >cc.out 2>&1); then
		cat "$dir/cc.out"
		echo "FAIL $name: pan does not compile"
		failures=$((failures + 1))
		return
	fi
	(cd "$dir" && timeout "$SPIN_TIMEOUT" $run) >"$out" 2>&1
	rc=$?
	t1=$(now)
	local errors wall
	errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' "$out" | tail -1)
	wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
	printf '%-18s %-8s' "$name" "$kind"
	grep -E 'states, stored|transitions \(' "$out" | tr -s ' \t' ' ' | tr '\n' ';'
	printf ' depth %s; pan %ss; wall %ss\n' \
		"$(sed -n 's/.*depth reached \([0-9]*\).*/\1/p' "$out" | tail -1)" \
		"$(sed -n 's/.*elapsed time \([0-9.e+]*\).*/\1/p' "$out" | tail -1)" \
		"$wall"
	if [ $rc = 124 ]; then
		echo "FAIL $name: pan did not finish in ${SPIN_TIMEOUT}s"
		failures=$((failures + 1))
		return
	fi
	if grep -qE 'max search depth too small|out of memory|MEMLIM|resizing hashtable to -w[0-9]+.. failed' "$out"; then
		grep -E 'max search depth too small|out of memory|MEMLIM' "$out"
		echo "FAIL $name: the search was truncated"
		failures=$((failures + 1))
		return
	fi
	if [ -z "$errors" ]; then
		tail -20 "$out"
		echo "FAIL $name: no result from pan (exit $rc)"
		failures=$((failures + 1))
		return
	fi
	if [ "$expect" = pass ]; then
		if [ "$errors" != 0 ] || grep -q 'Search not completed' "$out"; then
			grep -E '^pan:|Search not completed' "$out" | head -5
			echo "--- counterexample (spin -t):"
			(cd "$dir" && cp "$model" . && "$SPIN" -t -p -g "$@" "${model##*/}" 2>&1 | tail -60)
			echo "FAIL $name: expected no error"
			failures=$((failures + 1))
			return
		fi
		echo "  ok: no error, search complete"
	else
		if [ "$errors" = 0 ] || ! grep -q "$expect" "$out"; then
			grep -E '^pan:' "$out" | head -5
			echo "FAIL $name: $not_caught (expected: $expect)"
			failures=$((failures + 1))
			return
		fi
		echo "  ok: $caught: $(grep -m1 "$expect" "$out" | sed 's/^pan:[0-9]*: //')"
		if [ $print_trail = 1 ]; then
			echo "--- counterexample (spin -t -p), the last steps:"
			(cd "$dir" && cp "$model" . && "$SPIN" -t -p "$@" "${model##*/}" 2>&1 |
				grep -E '^ *[0-9]+:|assert' | tail -60)
		fi
	fi
}

print_trail=0
not_caught="the mutation was not caught" caught=caught
discard_checks() {
	check discard safety pass -DDISCARD
	check rf-takes-zapped safety 'assertion violated' -DDISCARD -DRF_TAKES_ZAPPED
	check early-inv-end safety 'assertion violated' -DDISCARD -DEARLY_INV_END
	check no-cas safety 'assertion violated' -DDISCARD -DNO_CAS
	check no-zap-discard safety 'assertion violated' -DDISCARD -DNO_ZAP_DISCARD
}
if [ $only_bug = 1 ]; then
	print_trail=1
	check stale-install safety 'assertion violated' -DSTALE_INSTALL
elif [ $huge = 1 ]; then
	model=$here/huge.pml
	check huge safety pass
	check huge-3ops safety pass -DDEV_OPS=3
	check no-split-wait safety 'assertion violated' -DNO_SPLIT_WAIT
	check no-pt-split safety 'assertion violated' -DNO_PT_SPLIT
elif [ $coherent = 1 ]; then
	model=$here/coherent.pml
	check coherent safety pass
	check coherent-liveness liveness pass
	check no-serve safety 'invalid end state' -DNO_SERVE
	check no-unzap safety 'assertion violated' -DNO_UNZAP
	check no-poplock safety 'assertion violated' -DNO_POPLOCK
	model=$here/cohdiscard.pml
	check coh-discard safety pass
	check coh-discard-3 safety pass -DMIGS=3
	check coh-discard-liveness liveness pass
	check no-coh-discard safety 'assertion violated' -DNO_COH_DISCARD
elif [ $evict = 1 ]; then
	model=$here/evict.pml
	check evict safety pass
	check evict-liveness liveness pass
	check evict-two safety pass -DTWO_REQ -DNO_HOMER
	check early-frame-free safety 'assertion violated' -DTWO_REQ -DNO_HOMER \
		-DEARLY_FRAME_FREE
	check early-free-entry safety 'assertion violated' -DTWO_REQ -DNO_HOMER \
		-DEARLY_FRAME_FREE -DONLY_ENTRY_CHECK
	check blocking-evict safety 'invalid end state' -DBLOCKING_EVICT
	check no-recheck safety 'assertion violated' -DNO_RECHECK
	check no-timeout safety 'invalid end state' -DTWO_REQ -DNO_HOMER -DNO_TIMEOUT \
		-DEVICT_TRIES=3
	check evict-unbounded liveness 'non-progress cycle' -DEVICT_TRIES=0
	check nothing-enomem safety 'assertion violated' -DNOTHING_ENOMEM
	check locked-not-busy safety 'assertion violated' -DTWO_REQ -DNO_HOMER \
		-DLOCKED_NOT_BUSY
elif [ $evict = 3 ]; then
	model=$here/readmostly.pml
	check readmostly safety pass
	check readmostly-dev-write safety pass -DDEV_WRITE
	check late-protect safety 'assertion violated' -DLATE_PROTECT
	check early-unprotect safety 'assertion violated' -DEARLY_UNPROTECT
	check readmostly-discard safety pass -DDISCARD -DDUPS=1
	check readmostly-discard-dev-write safety pass -DDISCARD -DDUPS=1 -DDEV_WRITE
	check zap-unlock-no-inv safety 'assertion violated' -DDISCARD -DDUPS=1 \
		-DZAP_UNLOCK_NO_INV
	check readmostly-discard-fill safety pass -DDISCARD -DFILL -DDUPS=1 -DW=1
	check unzap-keeps-dup safety 'assertion violated' -DDISCARD -DFILL -DDUPS=1 -DW=1 \
		-DUNZAP_KEEPS_DUP
elif [ $evict = 4 ]; then
	model=$here/remake.pml
	check copyout safety pass
	check copyout-liveness liveness pass
	check early-ownclear safety 'assertion violated' -DEARLY_OWNCLEAR
	check ignore-zapped safety 'assertion violated' -DIGNORE_ZAPPED
	check no-wp safety 'assertion violated' -DNO_WP
	check remake safety pass -DREMAKE
	check remake-as-committed safety 'assertion violated' -DREMAKE -DUNBRACKETED
	check remake-relook safety 'assertion violated' -DREMAKE -DUNBRACKETED -DRELOOK
elif [ $evict = 2 ]; then
	model=$here/evict.pml
	check evict-two-homer safety pass -DTWO_REQ
	check evict-two-liveness liveness pass -DTWO_REQ -DNO_HOMER
elif [ $discard = 1 ]; then
	check discard-stay safety pass -DDISCARD -DTO_DEV_TWICE -DONLY_ENTRY_CHECK
	print_trail=1
	check stay-rf-takes-zapped safety 'assertion violated' -DDISCARD -DTO_DEV_TWICE \
		-DONLY_ENTRY_CHECK -DRF_TAKES_ZAPPED
else
	check safety safety pass
	check liveness liveness pass
	check stale-install safety 'assertion violated' -DSTALE_INSTALL
	check lost-kick safety 'invalid end state' -DLOST_KICK
	check device-unbounded liveness 'non-progress cycle' -DDEV_TRIES=0
	discard_checks
fi

if [ $failures != 0 ]; then
	echo "run-spin: $failures check(s) FAILED"
	exit 1
fi
echo "run-spin: all checks passed"
