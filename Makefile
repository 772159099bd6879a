# hubd's entry points. On a fresh Debian 12 machine, as root:
#   make run     install what is missing, build the release hubd and start it
#   make test    install what is missing, build the ci preset and run every test (unit + compat)
#   make bench   hubd against mosquitto with the same load generator (bench/run.sh)
#   make bench-sustained   hubd alone at 35,000 msgs/s for 5 minutes (bench/run.sh sustained)
#   make bench-micro   Google Benchmark micro benchmarks of the per-message path (release preset)
#   make fuzz-run  build the libFuzzer targets (fuzz preset: clang 14, ASan+UBSan) and run each
#                  for SECONDS (default 60), one at a time; TARGETS="fuzz_sas fuzz_http" picks some
# Variables: DATA (hubd's data folder, default ./hubd-data), HUBD_ARGS (more hubd flags, e.g.
# "--hostname myhub.local"), CTEST_ARGS (e.g. "-L compat" or "-R registry").

DATA ?= ./hubd-data
HUBD_ARGS ?=
CTEST_ARGS ?=
SECONDS ?= 60
TARGETS ?=

.PHONY: deps build run test bench bench-quick bench-sustained bench-micro fuzz-run clean

deps:
	scripts/install-deps

# A configure step runs only for a new build folder; later builds re-configure by themselves
# when a CMakeLists.txt changes.
build/%/CMakeCache.txt: | deps
	cmake --preset $*

build: deps build/dev/CMakeCache.txt
	cmake --build --preset dev

run: deps build/release/CMakeCache.txt
	cmake --build --preset release --target hubd hubctl
	exec build/release/src/server/hubd --data $(DATA) $(HUBD_ARGS)

test: deps build/ci/CMakeCache.txt
	cmake --build --preset ci
	ctest --test-dir build/ci --output-on-failure -j2 $(CTEST_ARGS)

# hubd against mosquitto on this machine (bench/run.sh; results go in docs/benchmarks.md).
bench: deps
	bench/run.sh full

bench-quick: deps
	bench/run.sh quick

# hubd alone at 35,000 msgs/s for 5 minutes (issue 8's sustained target).
bench-sustained: deps
	bench/run.sh sustained

# Micro benchmarks (bench/micro, Google Benchmark): codec, topics, SAS, telemetry, event log.
bench-micro: deps build/release/CMakeCache.txt
	cmake --build --preset release --target hubd-micro
	build/release/bench/micro/hubd-micro

# Every libFuzzer target for SECONDS each (scripts/fuzz.sh; results go in docs/fuzzing.md).
fuzz-run: deps
	scripts/fuzz.sh $(SECONDS) $(TARGETS)

clean:
	rm -rf build
