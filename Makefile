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
#   make install         the module into KDIR's module tree (modprobe openqos), the
#                        tools, man pages, shell completions, systemd units and example
#                        configuration, under DESTDIR and PREFIX (default /usr/local);
#                        make install-tools: all but the module. TOOLS_DIR: where the
#                        built tools are (default: make userspace's).

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

PREFIX ?= /usr/local
DESTDIR ?=
SBINDIR ?= $(PREFIX)/sbin
MANDIR ?= $(PREFIX)/share/man
DATADIR ?= $(PREFIX)/share
SYSCONFDIR ?= /etc
UNITDIR ?= $(PREFIX)/lib/systemd/system
TOOLS_DIR ?= $(CURDIR)/userspace/target/release
TOOLS := tcpchains netmeter skex qosmgr

install: install-module install-tools

install-module: module
	$(MAKE) -C $(KDIR) M=$(CURDIR) LLVM=$(LLVM) INSTALL_MOD_PATH=$(DESTDIR) INSTALL_MOD_DIR=extra modules_install

install-tools:
	@for t in $(TOOLS); do [ -x "$(TOOLS_DIR)/$$t" ] || { echo "$(TOOLS_DIR)/$$t missing: make userspace (or TOOLS_DIR=...)"; exit 1; }; done
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(UNITDIR) \
		$(DESTDIR)$(SYSCONFDIR)/openqos $(DESTDIR)$(DATADIR)/bash-completion/completions \
		$(DESTDIR)$(DATADIR)/zsh/site-functions $(DESTDIR)$(DATADIR)/fish/vendor_completions.d
	for t in $(TOOLS); do \
		install -m 0755 $(TOOLS_DIR)/$$t $(DESTDIR)$(SBINDIR)/$$t && \
		install -m 0644 Documentation/man/$$t.8 $(DESTDIR)$(MANDIR)/man8/$$t.8 && \
		$(TOOLS_DIR)/$$t --completions bash >$(DESTDIR)$(DATADIR)/bash-completion/completions/$$t && \
		$(TOOLS_DIR)/$$t --completions zsh >$(DESTDIR)$(DATADIR)/zsh/site-functions/_$$t && \
		$(TOOLS_DIR)/$$t --completions fish >$(DESTDIR)$(DATADIR)/fish/vendor_completions.d/$$t.fish || exit 1; \
	done
	for u in openqos qosmgr; do \
		sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' systemd/$$u.service.in \
			>$(DESTDIR)$(UNITDIR)/$$u.service || exit 1; \
	done
	install -m 0644 etc/qosmgr.toml.example $(DESTDIR)$(SYSCONFDIR)/openqos/qosmgr.toml.example
	[ -e $(DESTDIR)$(SYSCONFDIR)/openqos/openqos.conf ] || \
		install -m 0644 etc/openqos.conf $(DESTDIR)$(SYSCONFDIR)/openqos/openqos.conf

.PHONY: all module clean userspace check bench install install-module install-tools
