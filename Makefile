# The two commands for a fresh machine:
#   make demo   a local 3-member etcd cluster (and, as they land, the monitor and dashboard)
#   make test   installs what is missing, then fmt, clippy and every test
SHELL := /bin/bash
CARGO ?= cargo
APT_PACKAGES := etcd-server etcd-client protobuf-compiler

.PHONY: all deps build test lint fmt bench demo clean

all: build

# Installs the system packages the build and the tests need, when missing.
deps:
	@missing=""; \
	command -v etcd >/dev/null 2>&1 || missing="$$missing etcd-server"; \
	command -v etcdctl >/dev/null 2>&1 || missing="$$missing etcd-client"; \
	command -v protoc >/dev/null 2>&1 || missing="$$missing protobuf-compiler"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

build: deps
	$(CARGO) build --workspace --release

lint: deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Benchmarks are compiled by clippy and run by `make bench`, not here.
# Test binaries run one after another; tests inside one binary share the
# machine's two cores, so their count is bounded.
test: lint
	RUST_TEST_THREADS=$${RUST_TEST_THREADS:-4} $(CARGO) test --workspace --lib --bins --tests
	$(CARGO) test --workspace --doc

bench: deps
	$(CARGO) bench -p etcd-testkit --bench startup
	$(CARGO) bench -p etcd-monitor --bench health_check

demo: deps
	$(CARGO) run --release -p etcd-monitor -- demo

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
