#!/usr/bin/env bash
# Install what building and testing uhmm needs (Debian/Ubuntu).
set -euo pipefail
SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
	build-essential cmake pkg-config libcmocka-dev clang libclang-rt-14-dev spin \
	python3 scdoc dpkg-dev lintian abigail-tools systemtap-sdt-dev >/dev/null
