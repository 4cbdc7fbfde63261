# A thin wrapper over CMake + Ninja so the everyday commands are short.
#   make demo    bootstrap, build, then replay the incident (ravel demo --incident) and the fixed run
#   make test    bootstrap, build, run every test, then again under ASan+UBSan and under TSan
#   make         build (build/ravel, build/libravel.{a,so})
BUILD      ?= build
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
CTEST_JOBS ?= 2

.PHONY: all bootstrap build build-asan build-tsan test test-fast test-asan test-tsan install clean demo

all: build

bootstrap:
	scripts/bootstrap

build:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build $(BUILD)

# The sanitizer build uses clang so that the libFuzzer targets are built and run too.
build-asan:
	cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang -DRAVEL_SANITIZE=ON
	cmake --build $(ASAN_BUILD)

build-tsan:
	cmake -S . -B $(TSAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang -DRAVEL_TSAN=ON
	cmake --build $(TSAN_BUILD)

test-fast: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(CTEST_JOBS)

test-asan: build-asan
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --test-dir $(ASAN_BUILD) --output-on-failure -j $(CTEST_JOBS)

test-tsan: build-tsan
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$(CURDIR)/tests/tsan.supp \
	  ctest --test-dir $(TSAN_BUILD) --output-on-failure -j $(CTEST_JOBS)

# The README's test command: everything CI runs.
test: bootstrap
	$(MAKE) test-fast
	$(MAKE) test-asan
	$(MAKE) test-tsan

# The main job: the incident on real processes, then the same load with every fix.
# The incident run's exit status is 1 by design (it ends unhealthy); the fixed run must be healthy.
demo: bootstrap build
	-$(BUILD)/ravel demo --incident --duration 30 --report ravel-demo-incident.html
	$(BUILD)/ravel demo --duration 30 --report ravel-demo-fixed.html

install: build
	cmake --install $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
