# SPDX-License-Identifier: GPL-2.0
#
# Builds openqos.ko against the cached test kernel (scripts/build-kernel), or KDIR=.
#   make                 module for the prod kernel
#   make FLAVOUR=debug   module for the debug kernel
#   make CLIPPY=1        with clippy
#   make userspace       the tools (cargo)
#   make check           host unit tests, clippy, rustfmt
#   make bench           the paper's Table 2 in the VM (prod kernel), written to
#                        Documentation/benchmarks.md

FLAVOUR ?= prod
KDIR ?= $(shell $(CURDIR)/scripts/build-kernel $(FLAVOUR))
LLVM ?= -19
export PATH := $(HOME)/.cargo/bin:$(PATH)

all: module

module:
	$(MAKE) -C $(KDIR) M=$(CURDIR) LLVM=$(LLVM) modules

clean:
	$(MAKE) -C $(KDIR) M=$(CURDIR) LLVM=$(LLVM) clean

userspace:
	cd userspace && cargo build --release

check:
	cd rust && cargo test -q && cargo clippy -q -- -D warnings && cargo fmt --check
	cd userspace && cargo test -q && cargo clippy -q --all-targets -- -D warnings && cargo fmt --check

bench:
	$(CURDIR)/scripts/bench

.PHONY: all module clean userspace check bench
