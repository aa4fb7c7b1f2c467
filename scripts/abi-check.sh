#!/usr/bin/env bash
# abi-check.sh [BUILDDIR] [--update] - compare the ABI of the libraries
# built in BUILDDIR (default build; they need debug information, as the
# default RelWithDebInfo build has) with the baseline of the last release in
# abi/ (libabigail's abidw and abidiff).  An incompatible change (a symbol
# removed, ...: abidiff's bit 8) fails: it needs a new SONAME number
# (UHMM_SOVERSION in CMakeLists.txt) and a new baseline, a decision recorded
# in CHANGELOG.md.  Compatible changes (additions; a structure that grew at
# its end, which uhmm's size fields allow) are printed and pass.
# --update writes the baseline from BUILDDIR (at a release).
set -euo pipefail
cd "$(dirname "$0")/.."
b=build
update=0
for a in "$@"; do
	case $a in
	--update) update=1 ;;
	*) b=$a ;;
	esac
done
status=0
for lib in libuhmm libuhmm-dmirror; do
	so=$(readlink -f "$b/$lib.so")
	soname=$(objdump -p "$so" | awk '/SONAME/ { print $2 }')
	base="abi/$soname.abi"
	new=$(mktemp)
	abidw --headers-dir include/uhmm --drop-private-types --out-file "$new" "$so"
	if [ $update = 1 ]; then
		mv "$new" "$base"
		echo "abi-check: wrote $base"
		continue
	fi
	if [ ! -f "$base" ]; then
		echo "abi-check: no baseline $base for $soname (a new SONAME?): run with --update at the release" >&2
		rm -f "$new"
		status=1
		continue
	fi
	set +e
	abidiff --suppressions abi/suppressions.abignore "$base" "$new" > "$new.report"
	r=$?
	set -e
	if [ $((r & 3)) -ne 0 ]; then
		echo "abi-check: abidiff failed ($r) on $soname" >&2
		cat "$new.report" >&2
		status=1
	elif [ $((r & 8)) -ne 0 ]; then
		echo "abi-check: INCOMPATIBLE change of $soname against $base:" >&2
		cat "$new.report" >&2
		status=1
	elif [ $((r & 4)) -ne 0 ]; then
		echo "abi-check: $soname changed compatibly against $base:"
		sed 's/^/    /' "$new.report" | head -60
	else
		echo "abi-check: $soname: no change against $base"
	fi
	rm -f "$new" "$new.report"
done
exit $status
