# SPDX-License-Identifier: GPL-2.0
# Shared definitions for the openqos scripts. Source it; do not execute it.

OPENQOS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OPENQOS_CACHE=${OPENQOS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/openqos}
# The Debian source package that carries the test kernel.
KERNEL_SERIES=7.3
KERNEL_PKG=linux-source-$KERNEL_SERIES
LLVM_SUFFIX=-19
BINDGEN_VERSION=0.72.1

export PATH="$HOME/.cargo/bin:$PATH"

# ocargo WORKSPACE ARGS...: cargo in $OPENQOS_ROOT/WORKSPACE (rust, userspace,
# tools/qosplot) with its build directory in the cache, outside the repository, like the
# kernel builds: a fresh clone then rebuilds only its own crates, not every dependency
# (about 80 s of the suite's setup on a 2-core machine). OPENQOS_CARGO_CACHE=0 keeps
# the usual WORKSPACE/target.
ocargo() {
	local ws=$1
	shift
	if [ "${OPENQOS_CARGO_CACHE:-1}" = 0 ]; then
		(cd "$OPENQOS_ROOT/$ws" && cargo "$@")
	else
		(cd "$OPENQOS_ROOT/$ws" && CARGO_TARGET_DIR="$(cargo_target "$ws")" cargo "$@")
	fi
}

# cargo_target WORKSPACE: where ocargo builds WORKSPACE.
cargo_target() {
	if [ "${OPENQOS_CARGO_CACHE:-1}" = 0 ]; then
		printf '%s\n' "$OPENQOS_ROOT/$1/target"
	else
		printf '%s\n' "$OPENQOS_CACHE/cargo-target/$(printf '%s' "$1" | tr / -)"
	fi
}

die() {
	printf 'openqos: error: %s\n' "$*" >&2
	exit 1
}

note() {
	printf 'openqos: %s\n' "$*" >&2
}

# Directory holding the unpacked kernel source (set up by scripts/setup).
kernel_src_dir() {
	local d
	d=$(ls -d "$OPENQOS_CACHE"/src/linux-source-"$KERNEL_SERIES"*/ 2>/dev/null | head -n1)
	[ -n "$d" ] || die "kernel source not unpacked under $OPENQOS_CACHE/src; run scripts/setup"
	printf '%s\n' "${d%/}"
}

# Build directory for a kernel flavour (prod|debug), keyed by source version and the
# hash of the config fragments that make it.
kernel_build_dir() {
	local flavour=$1 src ver hash
	src=$(kernel_src_dir)
	ver=$(basename "$src")
	hash=$(cat "$OPENQOS_ROOT/qemu-tests/config/base.config" \
		"$OPENQOS_ROOT/qemu-tests/config/$flavour.config" | sha256sum | cut -c1-12)
	printf '%s\n' "$OPENQOS_CACHE/kbuild/$ver-$flavour-$hash"
}
