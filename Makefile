# chunkgrpo: the one build entry.
#   make              build everything that exists (CUDA parts only where nvcc is found)
#   make web          the dashboard: web/src bundled into web/dist (npm ci at first)
#   make test         build and run every test; ends with "N passed, N failed, N skipped"
#   make run          the main demo job
#   make bench-engine engine vs PyTorch (CPU) and OpenBLAS sgemm, small preset, batch 32
#   make bench-sample SDE sampling throughput vs PyTorch, small preset, batch 32
#   make bench-grpo   seconds per GRPO iteration by phase vs a PyTorch iteration, same shapes
#   make bench-server the control server under wrk: GETs, event ingestion, 200 SSE clients
#   make gpu-check    CUDA parity tests and GPU benchmark vs PyTorch (needs a GPU; see tests/gpu)
#   make ref          regenerate the PyTorch reference fixtures (needs python3-torch)
#   make fuzz         fuzz the safetensors reader, the config validator and the server router
#                     for FUZZ_SECONDS each (libFuzzer, clang)
#   make SANITIZE=address,undefined all     sanitizer build (in build-san/)
# `make test` runs the unit suites twice, plain and under ASan + UBSan, the command-line tests,
# and a replay of the fuzz corpus.

CC       ?= gcc
ARCH     ?= -march=native
OPT      ?= -O3
CFLAGS   ?= $(OPT) $(ARCH) -g
CFLAGS   += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wno-unused-parameter -fopenmp -MMD -MP
ifeq ($(CI),true)
CFLAGS   += -Werror
endif
BUILD    ?= build
ifneq ($(SANITIZE),)
CFLAGS   += -fsanitize=$(SANITIZE) -fno-sanitize-recover=all -fno-omit-frame-pointer
LDFLAGS  += -fsanitize=$(SANITIZE)
BUILD    := build-san
endif
LDFLAGS  += -fopenmp

BLAS_CFLAGS := $(shell pkg-config --cflags openblas 2>/dev/null)
BLAS_LIBS   := $(shell pkg-config --libs openblas 2>/dev/null || echo -lopenblas)
CFLAGS      += $(BLAS_CFLAGS) -Iworker/engine -Icommon -Iworker
LIBS_ENGINE := $(BLAS_LIBS) -lm
LIBS_COMMON := -ljansson -lpng -lm -ldl
# the worker's uplink to the control server (worker/uplink.c); the engine never links it
LIBS_WORKER := -lcurl

PYTHON_TORCH ?= /usr/bin/python3

ENGINE_SRC := $(wildcard worker/engine/*.c)
# the engine's BLAS-free core (the CUDA build links these without OpenBLAS)
ENGINE_CORE_SRC := $(addprefix worker/engine/,model.c rng.c sampler.c grpo.c adamw.c tokenizer.c)
COMMON_SRC := $(wildcard common/*.c)
WORKER_SRC := $(wildcard worker/*.c worker/world/*.c worker/rewards/*.c worker/runners/*.c)
ENGINE_OBJ := $(ENGINE_SRC:%.c=$(BUILD)/%.o)
COMMON_OBJ := $(COMMON_SRC:%.c=$(BUILD)/%.o)
WORKER_OBJ := $(filter-out $(BUILD)/worker/main.o,$(WORKER_SRC:%.c=$(BUILD)/%.o))

TEST_SRC   := $(wildcard tests/unit/test_*.c)
TEST_BINS  := $(TEST_SRC:tests/unit/%.c=$(BUILD)/tests/%)

WORKER_BIN := bin/chunkgrpo-worker

.PHONY: all test sanitized-tests run bench-engine bench-sample bench-grpo bench-server gpu-check ref fuzz clean
all: $(WORKER_BIN) $(TEST_BINS) $(BUILD)/bench/bench_engine $(BUILD)/bench/bench_sample

# The engine's elementwise loops (exp, GELU, softmax) vectorize only when the compiler may ignore
# floating-point exception flags, which nothing here reads; results are unchanged.
$(ENGINE_OBJ): CFLAGS += -fno-trapping-math

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# each archive anew: `ar r` never drops a member whose source file was removed or renamed
$(BUILD)/libengine.a: $(ENGINE_OBJ)
	rm -f $@ && ar rcs $@ $^
$(BUILD)/libcommon.a: $(COMMON_OBJ)
	rm -f $@ && ar rcs $@ $^
$(BUILD)/libworker.a: $(WORKER_OBJ)
	rm -f $@ && ar rcs $@ $^

# Link order: worker code, then common (JSON, files), then the engine core.
$(WORKER_BIN): $(BUILD)/worker/main.o $(BUILD)/libworker.a $(BUILD)/libcommon.a $(BUILD)/libengine.a
	@mkdir -p bin
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS_WORKER) $(LIBS_COMMON) $(LIBS_ENGINE)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(BUILD)/libworker.a $(BUILD)/libcommon.a $(BUILD)/libengine.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS_WORKER) $(LIBS_COMMON) $(LIBS_ENGINE)

# The cgraw reader lives with the GPU check (it links nothing but libc); its suite tests it here.
$(BUILD)/tests/test_cgraw: $(BUILD)/tests/gpu/cgraw.o
$(BUILD)/tests/unit/test_cgraw.o: CFLAGS += -Itests/gpu

# The engine's own suites link the engine core and BLAS only: proof that it needs no JSON, PNG,
# HTTP or database library.
ENGINE_TESTS := $(addprefix $(BUILD)/tests/,test_model test_rng)
$(ENGINE_TESTS): $(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(BUILD)/libengine.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS_ENGINE)

# The experiment tables and their validator link with the common library alone, as the control
# server does: no engine, no BLAS, no runners.
$(BUILD)/tests/test_experiment: $(BUILD)/tests/unit/test_experiment.o $(BUILD)/libcommon.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS_COMMON)

$(BUILD)/bench/bench_engine: $(BUILD)/tests/bench/bench_engine.o $(BUILD)/libworker.a $(BUILD)/libcommon.a $(BUILD)/libengine.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS_COMMON) $(LIBS_ENGINE)

# ---- MPI: bin/libchunkgrpo_mpi.so, built wherever mpicc exists; the worker never links MPI and
# loads the library only in a process that mpirun started (worker/dist.h)
MPICC ?= $(shell command -v mpicc 2>/dev/null)
ifneq ($(MPICC),)
MPI_LIB := bin/libchunkgrpo_mpi.so
all: $(MPI_LIB)
test: $(MPI_LIB)
$(MPI_LIB): worker/mpi/dist_mpi.c
	@mkdir -p bin
	$(MPICC) -O2 -g -std=c11 -Wall -Wextra $(if $(filter true,$(CI)),-Werror) -fPIC -shared -o $@ $<
endif

# ---- CUDA backend: built wherever nvcc exists (on PATH or under /usr/local/cuda), for Hopper
# (sm_90) and Ampere (sm_80); skipped cleanly elsewhere. The CPU build never depends on it.
NVCC ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
ifneq ($(NVCC),)
CUDA_HOME   ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CUDA_ARCHS  ?= -gencode arch=compute_90,code=sm_90 -gencode arch=compute_80,code=sm_80
NVCCFLAGS   ?= -O3 -g
NVCCFLAGS   += -std=c++17 $(CUDA_ARCHS) -D_GNU_SOURCE -Iworker/engine -Xcompiler -fPIC,-Wall,-Wextra,-Wno-unused-parameter -MMD -MP
ifeq ($(CI),true)
NVCCFLAGS   += -Werror all-warnings -Xcompiler -Werror
endif
CUDA_LIBS   := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcudart -lstdc++
CUDA_SRC    := $(wildcard worker/engine/cuda/*.cu)
CUDA_OBJ    := $(CUDA_SRC:%.cu=$(BUILD)/%.o)
ENGINE_CORE_OBJ := $(ENGINE_CORE_SRC:%.c=$(BUILD)/%.o)
GPU_CHECK   := $(BUILD)/gpu/gpu_check
CUDA_LIB    := bin/libchunkgrpo_cuda.so
all: $(GPU_CHECK) $(CUDA_LIB)
test: $(GPU_CHECK) $(CUDA_LIB) # CI compiles the backend, and the CLI tests load the library

$(BUILD)/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

$(BUILD)/libengine_cuda.a: $(CUDA_OBJ)
	ar rcs $@ $^

# The worker loads the backend at run time (worker/backend.c), so it never links CUDA itself. The
# library carries its own position-independent copy of the BLAS-free engine core.
ENGINE_CORE_PIC := $(ENGINE_CORE_SRC:%.c=$(BUILD)/pic/%.o)
$(BUILD)/pic/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fPIC -fno-trapping-math -c $< -o $@
$(CUDA_LIB): $(CUDA_OBJ) $(ENGINE_CORE_PIC)
	@mkdir -p bin
	$(CC) -shared -fopenmp -o $@ $^ $(CUDA_LIBS) -lm

$(BUILD)/tests/gpu/gpu_check.o: CFLAGS += -Iworker/engine/cuda -Itests/gpu
# The GPU check links the engine's BLAS-free core and the CUDA backend only: it builds on a GPU
# machine that has no OpenBLAS, jansson or libpng.
$(GPU_CHECK): $(BUILD)/tests/gpu/gpu_check.o $(BUILD)/tests/gpu/cgraw.o $(BUILD)/libengine_cuda.a $(ENGINE_CORE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(CUDA_LIBS) -lm

# make gpu-check: parity against the fixtures and the GPU benchmark against PyTorch (on a
# machine with a GPU; prints one table). GPU_CHECK_ARGS=--no-bench for parity alone.
gpu-check: $(GPU_CHECK)
	$(GPU_CHECK) tests/reference/fixtures $(GPU_CHECK_ARGS)
else
gpu-check:
	@echo "gpu-check: nvcc not found (looked on PATH and in /usr/local/cuda/bin): no CUDA backend here" >&2; exit 1
endif

# ---- the control server: libmicrohttpd, SQLite, libuv and the common library (no engine)
SERVER_SRC  := $(wildcard server/*.c)
SERVER_OBJ  := $(SERVER_SRC:%.c=$(BUILD)/%.o)
SERVER_BIN  := bin/chunkgrpo-server
LIBS_SERVER := -lmicrohttpd -lsqlite3 -luv -lpthread
$(SERVER_OBJ): CFLAGS += -Iserver
$(BUILD)/libserver.a: $(filter-out $(BUILD)/server/main.o,$(SERVER_OBJ))
	ar rcs $@ $^
$(SERVER_BIN): $(BUILD)/server/main.o $(BUILD)/libserver.a $(BUILD)/libcommon.a
	@mkdir -p bin
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS_SERVER) $(LIBS_COMMON)
all: $(SERVER_BIN)
test: $(SERVER_BIN)

# The dashboard (web/): npm ci once, then esbuild bundles web/src into web/dist, which the server
# serves. `make all` skips it without npm; `make test` needs it (tests/cli/browser.sh).
WEB_SRC := $(wildcard web/src/*.js web/src/pages/*.js web/src/*.css web/src/*.html) web/build.mjs \
    deploy/experiments/demo-chunk-grpo.json
.PHONY: web
web: web/dist/app.js
web/node_modules: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	@touch $@
web/dist/app.js: web/node_modules $(WEB_SRC)
	cd web && node build.mjs
ifneq ($(shell command -v npm 2>/dev/null),)
all: web
else
all: ; @echo "make: npm not found, the dashboard (web/dist) is not built"
endif
test: web

# the server's unit suites (tests/unit/test_server_*.c) link the server library, not the engine
SERVER_TESTS := $(filter $(BUILD)/tests/test_server_%,$(TEST_BINS))
$(SERVER_TESTS): $(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(BUILD)/libserver.a $(BUILD)/libcommon.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS_SERVER) $(LIBS_COMMON)
$(BUILD)/tests/unit/test_server_%.o: CFLAGS += -Iserver

SAN_FLAGS := address,undefined
# libFuzzer harnesses on our own parsers: tests/fuzz/fuzz_NAME.c, its seed corpus
# tests/fuzz/corpus/NAME/ and, where there is one, its dictionary tests/fuzz/NAME.dict.
# safetensors: the checkpoint reader; config: the experiment-config validator and chunk specs;
# router: the server's route matcher and its JSON limit checks. FUZZ_BIN is the first.
FUZZ_NAMES   := safetensors config router
FUZZ_BINS    := $(FUZZ_NAMES:%=build/fuzz/fuzz_%)
FUZZ_BIN     := $(firstword $(FUZZ_BINS))
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= $(FUZZ_NAMES)
FUZZ_CC      := clang -g -O1 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined
FUZZ_FLAGS_router := -max_len=9000 # paths up to the harness's 8 KiB cap

test: $(WORKER_BIN) $(TEST_BINS) $(FUZZ_BINS)
	@$(MAKE) --no-print-directory SANITIZE=$(SAN_FLAGS) sanitized-tests
	@BUILD=$(BUILD) SAN_BUILD=build-san FUZZ_BINS="$(FUZZ_BINS)" tests/run.sh

# Only the unit-test binaries, built in build-san/ when SANITIZE is set.
sanitized-tests: $(TEST_BINS)

# libFuzzer needs clang; without it the harnesses are skipped (and the replay suites say so).
# Each is one clang command over its sources (listed .c prerequisites), instrumented throughout.
build/fuzz/fuzz_safetensors: tests/fuzz/fuzz_safetensors.c common/safetensors.c common/jsonutil.c common/safetensors.h
build/fuzz/fuzz_config: tests/fuzz/fuzz_config.c common/experiment.c common/config.c common/jsonutil.c \
    common/experiment.h common/config.h
# The route table points at every handler, so the router harness links the server library's
# sources (all but main.c) and the common files they use; only the matcher and the checks run.
build/fuzz/fuzz_router: FUZZ_EXTRA = -Iserver $(LIBS_SERVER)
build/fuzz/fuzz_router: tests/fuzz/fuzz_router.c $(filter-out server/main.c,$(SERVER_SRC)) \
    common/sha256.c common/experiment.c common/config.c common/jsonutil.c $(wildcard server/*.h)
$(FUZZ_BINS):
	@mkdir -p $(dir $@)
	@if command -v clang >/dev/null; then \
	  echo "$(FUZZ_CC) -o $@"; \
	  $(FUZZ_CC) -Icommon $(filter %.c,$^) $(FUZZ_EXTRA) -ljansson -o $@; \
	else echo "clang not found: $@ not built"; fi

# make fuzz: each harness of FUZZ_TARGETS (default all) for FUZZ_SECONDS; new inputs go to
# build/fuzz/corpus/NAME/, a crashing one to build/fuzz/NAME-crash-*. Fails if any crashed.
fuzz: $(FUZZ_BINS)
	@command -v clang >/dev/null || { echo "fuzz: clang not found: no libFuzzer harness built" >&2; exit 1; }
	@fail=; $(foreach n,$(FUZZ_TARGETS),mkdir -p build/fuzz/corpus/$(n); \
	  echo "== fuzz $(n) for $(FUZZ_SECONDS) s"; \
	  build/fuzz/fuzz_$(n) -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=build/fuzz/$(n)- \
	    $(if $(wildcard tests/fuzz/$(n).dict),-dict=tests/fuzz/$(n).dict) $(FUZZ_FLAGS_$(n)) \
	    build/fuzz/corpus/$(n) tests/fuzz/corpus/$(n) || fail="$$fail $(n)";) \
	[ -z "$$fail" ] || { echo "fuzz: crashed:$$fail (inputs in build/fuzz/)" >&2; exit 1; }

# the whole product: server + one local worker on the demo experiment (deploy/run.sh)
run:
	@bash deploy/install-deps.sh
	@$(MAKE) --no-print-directory $(SERVER_BIN) $(WORKER_BIN) web
	@deploy/run.sh

bench-engine: $(BUILD)/bench/bench_engine
	@tests/bench/bench_engine.sh $(BUILD)/bench/bench_engine $(PYTHON_TORCH)

$(BUILD)/bench/bench_sample: $(BUILD)/tests/bench/bench_sample.o $(BUILD)/libengine.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS_ENGINE)

bench-sample: $(BUILD)/bench/bench_sample
	@tests/bench/bench_sample.sh $(BUILD)/bench/bench_sample $(PYTHON_TORCH)

bench-server: $(SERVER_BIN)
	@tests/bench/bench_server.sh $(SERVER_BIN)

bench-grpo: $(WORKER_BIN)
	@tests/bench/bench_grpo.sh $(WORKER_BIN) $(PYTHON_TORCH)

ref:
	$(PYTHON_TORCH) tests/reference/make_fixtures.py --out tests/reference/fixtures
	$(PYTHON_TORCH) tests/reference/make_adamw_fixture.py
	$(PYTHON_TORCH) tests/reference/make_sampler_fixtures.py
	$(PYTHON_TORCH) tests/reference/make_grpo_fixtures.py
	$(PYTHON_TORCH) tests/reference/to_raw.py tests/reference/fixtures/*.safetensors

clean:
	rm -rf build build-san bin web/dist

.SECONDARY: # keep intermediate objects (test mains), so nothing rebuilds or is deleted needlessly

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
