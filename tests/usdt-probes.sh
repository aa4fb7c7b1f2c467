#!/usr/bin/env bash
# usdt-probes.sh LIB TRACING_MD [PROGRAM ARGS...]
#
# Every probe docs/TRACING.md lists (its "Probes" table: `uhmm:NAME`) is in
# LIB's ELF notes, and LIB has no probe the document does not list.  Then,
# if PROGRAM is given and the machine allows it (root, tracefs with
# uprobe_events), a live check: a uprobe with the semaphore's reference
# counter on uhmm:cpu_fault_done, PROGRAM run (it must take CPU faults),
# and the trace must show hits.  Exit 77 (skip) with the reason where the
# live part cannot run; the static part has run by then.
set -euo pipefail
lib=$(readlink -f "$1") doc=$2
shift 2

documented=$(grep -oE '^\| `uhmm:[a-z_]+`' "$doc" | sed 's/.*uhmm:\([a-z_]*\)`/\1/' | sort -u)
inlib=$(readelf -n "$lib" | awk '/Provider: uhmm/ { p = 1; next } p && /Name:/ { print $2; p = 0 }' | sort -u)
if [ -z "$inlib" ]; then
	echo "usdt-probes: $lib has no uhmm probes (built without sys/sdt.h?)" >&2
	exit 1
fi
missing=$(comm -23 <(echo "$documented") <(echo "$inlib"))
extra=$(comm -13 <(echo "$documented") <(echo "$inlib"))
if [ -n "$missing" ] || [ -n "$extra" ]; then
	[ -n "$missing" ] && echo "usdt-probes: documented but not in the library: $missing" >&2
	[ -n "$extra" ] && echo "usdt-probes: in the library but not documented: $extra" >&2
	exit 1
fi
echo "usdt-probes: $(echo "$inlib" | wc -l) probes, each documented"
[ $# -gt 0 ] || exit 0

# ---- live ----
if [ "$(id -u)" != 0 ]; then
	echo "usdt-probes: live check skipped: not root (uprobes need CAP_SYS_ADMIN)"
	exit 77
fi
t=/sys/kernel/tracing
if [ ! -e $t/uprobe_events ]; then
	mount -t tracefs nodev $t 2>/dev/null || true
fi
if [ ! -w $t/uprobe_events ]; then
	echo "usdt-probes: live check skipped: no tracefs uprobe_events here"
	exit 77
fi
# The probe's address and its semaphore's, as file offsets (PT_LOAD).
read -r loc sem < <(readelf -n "$lib" | awk '/Name: cpu_fault_done/ { getline;
	gsub(",", ""); print $2, $6; exit }')
off() {
	local a=$(($1)) typ o v p fs ms rest
	while read -r typ o v p fs ms rest; do
		[ "$typ" = LOAD ] || continue
		if [ $a -ge $((v)) ] && [ $a -lt $((v + ms)) ]; then
			printf '0x%x\n' $((a - v + o))
			return
		fi
	done < <(readelf -lW "$lib")
	echo "usdt-probes: address $1 in no PT_LOAD of $lib" >&2
	exit 1
}
loc_off=$(off "$loc")
sem_off=$(off "$sem")
group=uhmm_usdt_test_$$
ev="p:$group/cpu_fault_done $lib:$loc_off($sem_off)"
cleanup() {
	echo 0 > "$t/events/$group/enable" 2>/dev/null || true
	echo "-:$group/cpu_fault_done" >> $t/uprobe_events 2>/dev/null || true
}
trap cleanup EXIT
if ! echo "$ev" >> $t/uprobe_events 2>/dev/null; then
	echo "usdt-probes: live check skipped: the kernel refused the uprobe '$ev'"
	exit 77
fi
echo > $t/trace
echo 1 > "$t/events/$group/enable"
"$@" >/dev/null
hits=$(grep -c " cpu_fault_done: " $t/trace || true)
cleanup
trap - EXIT
if [ "$hits" -lt 1 ]; then
	echo "usdt-probes: live: no hit of uhmm:cpu_fault_done while '$*' ran" >&2
	exit 1
fi
echo "usdt-probes: live: uhmm:cpu_fault_done hit $hits times"
