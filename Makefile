# duckpart — the two commands a new user runs: `make demo` and `make test`.
# Both install what is missing first (scripts/bootstrap, idempotent), then build.
.PHONY: all bootstrap build demo test asan tsan stress format format-check install-check bench clean

JOBS ?= $(shell nproc 2>/dev/null || echo 2)
DEMO_ROWS ?= 2000000
BENCH_ROWS ?= 100000000

all: build

bootstrap:
	@bash scripts/bootstrap

build: bootstrap
	@cmake --preset release >/dev/null
	@cmake --build build/release -j $(JOBS)

data/data.duckdb: | build
	@./build/release/tools/generate_demo_data --database data/data.duckdb --rows $(DEMO_ROWS)

demo: build data/data.duckdb
	@./build/release/examples/example_partitioned_usage --database data/data.duckdb --partitions data/partitions

test: build
	@ctest --preset release -j $(JOBS)

asan: bootstrap
	@cmake --preset asan >/dev/null
	@cmake --build build/asan -j $(JOBS)
	@ctest --preset asan -j $(JOBS)

format:
	@git ls-files '*.cpp' '*.hpp' | xargs clang-format -i

format-check:
	@git ls-files '*.cpp' '*.hpp' | xargs clang-format --dry-run -Werror

# Installs the library into build/install and builds examples/ against it with find_package(duckpart).
install-check: build
	@cmake --install build/release --prefix build/install >/dev/null
	@cmake -S examples -B build/examples-installed -DCMAKE_PREFIX_PATH=$(CURDIR)/build/install >/dev/null
	@cmake --build build/examples-installed -j $(JOBS)
	@echo "install-check: examples built against the installed duckpart package"

# The concurrency tests (label "concurrency") under ThreadSanitizer.
tsan: bootstrap
	@cmake --preset tsan >/dev/null
	@cmake --build build/tsan -j $(JOBS) --target soak_test partitioned_test
	@ctest --preset tsan -j 1
	@TSAN_OPTIONS="halt_on_error=1:detect_deadlocks=0:ignore_noninstrumented_modules=1:suppressions=$(CURDIR)/tests/tsan.supp" \
	  ./build/tsan/tests/partitioned_test --gtest_filter='*Concurrent*:*Compact*:*WriteBuffer*:*TimedDrain*:*DuckDbExtensions*:*LargeBuffered*'

# Crash safety at depth: 100 kill -9 trials per operation (CI runs 20 in `make test`).
stress: build
	@DUCKPART_CRASH_TRIALS=100 ctest --preset release -L crash --timeout 7200

bench: build
	@./build/release/bench/duckpart_bench --rows $(BENCH_ROWS) --markdown docs/performance.md

clean:
	@rm -rf build
