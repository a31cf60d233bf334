# The two commands of the README: `make demo` and `make test`. Each installs what is
# missing (apt), configures and builds. CI=true turns warnings into errors.
BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
JOBS       ?= $(shell nproc)
FUZZ_SECONDS ?= 60
CMAKE_FLAGS ?=
ifneq ($(filter true 1 yes,$(CI)),)
  CMAKE_FLAGS += -DRASPC_WERROR=ON
  PIP_FLAGS += --config-settings=cmake.define.RASPC_WERROR=ON
endif

# ccache (installed by deps) serves every build: this one, the ASan one and the pip
# package's (which compiles the same objects). CMake reads these variables from the
# environment; the base directory makes cached objects reusable across clones.
ifneq ($(shell command -v ccache 2>/dev/null),)
  export CMAKE_C_COMPILER_LAUNCHER ?= ccache
  export CMAKE_CXX_COMPILER_LAUNCHER ?= ccache
  export CMAKE_CUDA_COMPILER_LAUNCHER ?= ccache
  export CCACHE_BASEDIR ?= $(CURDIR)
endif

.PHONY: all deps deps-test configure build demo test test-python test-asan fuzz bench clean

all: build

deps:
	@./scripts/install-deps.sh

# Also what only the tests and the benchmarks need (python3-torch, the CRATE reference); `demo` stays light.
# After `deps`, never beside it: two apt-get runs at once (make -j) would fight over the lock.
deps-test: deps
	@./scripts/install-deps.sh test

configure: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS) -- --no-print-directory

demo: configure
	@cmake --build $(BUILD) -j $(JOBS) --target raspc -- --no-print-directory
	@echo '$$ raspc eval examples/sort.rasp --input "3 1 2 2"        # the interpreter'
	@$(BUILD)/tools/raspc eval examples/sort.rasp --input "3 1 2 2"
	@echo '$$ raspc compile examples/sort.rasp -o $(BUILD)/sort.h5 --force'
	@$(BUILD)/tools/raspc compile examples/sort.rasp -o $(BUILD)/sort.h5 --force
	@echo '$$ raspc run $(BUILD)/sort.h5 --input "3 1 2 2"          # the transformer'"'"'s forward pass'
	@$(BUILD)/tools/raspc run $(BUILD)/sort.h5 --input "3 1 2 2"
	@echo '$$ raspc eval examples/hist.rasp --input "a b b c a" --json'
	@$(BUILD)/tools/raspc eval examples/hist.rasp --input "a b b c a" --json

# deps-test first, then the build: its configure step looks for torch (crate_torch_test).
test: deps-test
	@$(MAKE) --no-print-directory build
	@ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)
	@$(MAKE) --no-print-directory test-python

# The pip package (pyproject.toml) in a cached venv (scripts/python-venv.sh), then its
# tests; they compare saved models with $(BUILD)/tools/raspc's.
test-python: deps-test
	@venv=$$(./scripts/python-venv.sh python/requirements-test.txt) && \
	  "$$venv/bin/python" -m pip install -q --disable-pip-version-check --no-build-isolation $(PIP_FLAGS) . && \
	  RASPC_BINARY=$(CURDIR)/$(BUILD)/tools/raspc "$$venv/bin/python" -m pytest -q python/tests

# Compile sizes and times beside Tracr's, forward throughput beside numpy, CRATE beside PyTorch.
bench: deps-test
	@$(MAKE) --no-print-directory build
	@./bench/run.sh

# ASan+UBSan build of the same tests (CI runs it after `make test`).
test-asan: deps-test
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRASPC_SANITIZE=ON $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS) -- --no-print-directory
	@ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --test-dir $(ASAN_BUILD) --output-on-failure -j $(JOBS)

# libFuzzer over the parser and evaluator, seeded from examples/ (bounded time).
fuzz: deps
	@CC=clang-14 CXX=clang++-14 cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRASPC_FUZZ=ON $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz_frontend fuzz_hdf5 -- --no-print-directory
	@./tests/fuzz/run.sh $(FUZZ_BUILD)/tests/fuzz/fuzz_frontend $(FUZZ_SECONDS)
	@./tests/fuzz/run.sh $(FUZZ_BUILD)/tests/fuzz/fuzz_hdf5 $(FUZZ_SECONDS)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
