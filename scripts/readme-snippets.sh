#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# readme-snippets.sh - compile and link every ```c block of README.md
# against the library, so a snippet that does not compile fails CI (ctest
# runs this as docs.readme_snippets).
#
#   scripts/readme-snippets.sh CC INCLUDE_DIR LIB_DIR [README.md]
#
# How a block is built is said by an HTML comment (invisible on rendering)
# on the line just before its opening fence (blank lines between are
# allowed):
#   (no comment)                       a whole program: built as it is (it
#                                      has its own includes and main)
#   <!-- snippet: fragment -->         statements: they become the body of
#                                      main(), after the usual includes (the
#                                      block's own #include lines are moved
#                                      to the top)
#   <!-- snippet: declarations -->     file-scope code (types, functions):
#                                      built after the usual includes, with
#                                      an empty main() added if it has none
#   <!-- snippet: skip REASON -->      not built (REASON is printed); for
#                                      what cannot be built here (pseudo-
#                                      code, another language)
# The usual includes: the C library headers a snippet commonly needs and
# every public header of uhmm.  Each block is compiled with -Wall -Werror
# (unused variables and functions allowed: fragments have them) and linked
# with -luhmm-dmirror -luhmm, not run.  Indented blocks (in a list) are
# de-indented first.
set -u

CC=${1:?usage: readme-snippets.sh CC INCLUDE_DIR LIB_DIR [README.md]}
INC=${2:?include dir}
LIB=${3:?library dir}
README=${4:-$(dirname "$0")/../README.md}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Split README into block files: $work/N.mode and $work/N.c
awk -v dir="$work" '
	function flush_marker() { }
	/^[ \t]*<!--[ \t]*snippet:/ {
		m = $0
		sub(/^[ \t]*<!--[ \t]*snippet:[ \t]*/, "", m)
		sub(/[ \t]*-->[ \t]*$/, "", m)
		mode = m
		next
	}
	!inblock && /^[ \t]*```c[ \t]*$/ {
		inblock = 1
		n++
		match($0, /^[ \t]*/)
		indent = RLENGTH
		printf "%s\n", (mode == "" ? "program" : mode) > (dir "/" n ".mode")
		printf "%d\n", NR > (dir "/" n ".line")
		mode = ""
		next
	}
	inblock && /^[ \t]*```[ \t]*$/ {
		inblock = 0
		next
	}
	inblock {
		line = $0
		# De-indent by the fence indentation (never into the code).
		for (i = 0; i < indent && substr(line, 1, 1) ~ /[ \t]/; i++)
			line = substr(line, 2)
		print line > (dir "/" n ".c")
		next
	}
	# A marker applies to the next block only: text in between cancels it.
	/[^ \t]/ { mode = "" }
' "$README"

prelude='#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <uhmm/uhmm.h>
#include <uhmm/device.h>
#include <uhmm/mirror.h>
#include <uhmm/simdev.h>
#include <uhmm/dmirror.h>'

built=0 skipped=0 failed=0 total=0
for modef in $(ls "$work"/*.mode 2>/dev/null | sort -V); do
	n=$(basename "$modef" .mode)
	mode=$(cat "$modef")
	line=$(cat "$work/$n.line")
	src="$work/$n.c"
	[ -f "$src" ] || : >"$src"
	total=$((total + 1))
	prog="$work/prog$n.c"
	case "$mode" in
	program)
		cp "$src" "$prog"
		;;
	fragment)
		{
			echo "$prelude"
			grep -E '^[[:space:]]*#' "$src"
			echo "int main(void)"
			echo "{"
			echo "#line $((line + 1)) \"README.md\""
			grep -vE '^[[:space:]]*#' "$src"
			echo "return 0;"
			echo "}"
		} >"$prog"
		;;
	declarations)
		{
			echo "$prelude"
			echo "#line $((line + 1)) \"README.md\""
			cat "$src"
			# (A block that turned into a whole program keeps its main.)
			grep -qE '\<main[[:space:]]*\(' "$src" ||
				echo "int main(void) { return 0; }"
		} >"$prog"
		;;
	skip*)
		echo "README.md:$line: skipped (${mode#skip})"
		skipped=$((skipped + 1))
		continue
		;;
	*)
		echo "README.md:$line: unknown snippet mode '$mode'"
		failed=$((failed + 1))
		continue
		;;
	esac
	if "$CC" -std=gnu11 -Wall -Wextra -Werror -Wno-unused -Wno-unused-parameter \
		-I"$INC" "$prog" -o "$work/prog$n" -L"$LIB" -Wl,-rpath,"$LIB" \
		-luhmm-dmirror -luhmm -lpthread 2>"$work/err$n"; then
		echo "README.md:$line: $mode block builds"
		built=$((built + 1))
	else
		echo "README.md:$line: $mode block does not build:"
		cat "$work/err$n"
		failed=$((failed + 1))
	fi
done

if [ "$total" -eq 0 ]; then
	echo "no \`\`\`c block found in $README"
	exit 1
fi
echo "$built passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
