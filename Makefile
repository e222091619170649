# The README's two commands:  `make run`  and  `make test`.
# Each sets up what it needs on a fresh machine: redis-server (Debian
# package) and a virtual environment with the project and its dev tools.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Re-installed (and the compiled claim path rebuilt) when any of these change.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml setup.py gateway/kernel.pyx | cksum | cut -d' ' -f1)

.PHONY: setup run test bench-micro clean

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py gateway/kernel.pyx
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server (Debian package)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
	@# promtool (Debian package prometheus) checks ops/prometheus/ in the tests.
	@command -v promtool >/dev/null 2>&1 || { \
	  echo "installing promtool (Debian package prometheus)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  { $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } \
	  || echo "WARNING: promtool not installed: the ops/prometheus checks will be skipped"; }
	@# The compiled claim path (gateway/kernel.pyx) needs a C compiler and Python's headers.
	@{ command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1; } || { \
	  echo "setup: no C compiler: the compiled claim path cannot be built." \
	    "Install one (Debian: apt-get install gcc python3-dev) and run make setup again." >&2; exit 1; }
	@$(PYTHON) -c 'import sysconfig, os, sys; h = sysconfig.get_paths()["include"]; \
	  sys.exit(0 if os.path.exists(os.path.join(h, "Python.h")) else \
	  "setup: no Python.h in " + h + ": install the Python headers (Debian: apt-get install python3-dev)")'
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	@# Also compiles the claim path (gateway/kernel.pyx) in place; a change to it
	@# (part of the stamp) runs this again and rebuilds it.
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $@

# Starts a private redis-server, loads the sample data set through the
# loader, starts the gateway and shows claims being decided; Ctrl-C stops it.
run: setup
	$(PY) -m gateway $(ARGS)

# What CI runs (.ci/run): generated-code drift, lint, types, tests.
test: setup
	$(PY) -m proto.generate --check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy contract gateway loader proto/generate.py tests $(wildcard bench/*.py)
	$(PY) -m pytest

# The microbenchmarks (pytest-benchmark, 15M index): see bench/RESULTS.md.
bench-micro: setup
	$(PY) -m pytest bench/test_micro.py

# The compiled reference of `python -m bench.throughput --cpp`: a C++ gRPC
# server on the same proto (bench/cpp_server/, built into its build/).
# Installs the Debian packages libgrpc++-dev and protobuf-compiler-grpc when
# they are missing, as `setup` installs redis-server.
.PHONY: bench-cpp
bench-cpp:
	@{ command -v protoc && command -v grpc_cpp_plugin && command -v g++ && command -v pkg-config \
	   && pkg-config --exists grpc++ protobuf; } >/dev/null 2>&1 || { \
	  echo "installing libgrpc++-dev protobuf-compiler-grpc g++ pkg-config (Debian packages)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  { $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      libgrpc++-dev protobuf-compiler-grpc g++ pkg-config >/dev/null; } || { \
	    echo "bench-cpp: cannot install them; missing:" \
	      $$(command -v protoc >/dev/null || echo protoc) \
	      $$(command -v grpc_cpp_plugin >/dev/null || echo grpc_cpp_plugin) \
	      $$(command -v g++ >/dev/null || echo g++) \
	      $$(pkg-config --exists grpc++ protobuf 2>/dev/null || echo 'grpc++/protobuf headers') \
	      "(apt-get install libgrpc++-dev protobuf-compiler-grpc g++ pkg-config)" >&2; exit 1; }; }
	$(MAKE) -C bench/cpp_server

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
