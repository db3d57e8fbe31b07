# Quick start: `make demo` builds the INT8 host bundle on embedded defaults; `make test` runs the tests.
# Both create .venv and install everything on first use (CPU torch from the pinned wheel, never a CUDA build).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: setup demo test data test-kernels qemu cuda-bindings test-numpy check-py310 device-check trt-surfaces-check gcc

$(BIN)/python:
	$(PY) -m venv $(VENV)

# The stamp is redone whenever pyproject.toml changes.
$(VENV)/.setup-done: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[host,dev]"
	touch $@

setup: $(VENV)/.setup-done data

# Every cuda-python the extras allow, each in its own --target dir for tests/test_cuda_bindings.py (no driver needed).
export SCALABLEVIT_BINDINGS_DIR := $(abspath $(VENV))/cuda-bindings
CUDA_BINDINGS := $(shell grep -v '^\#' tests/data/cuda_bindings.txt)
BINDING_DIRS := $(foreach v,$(CUDA_BINDINGS),$(VENV)/cuda-bindings/$(v)/.done)
$(VENV)/cuda-bindings/%/.done: | $(BIN)/python
	rm -rf $(@D) && $(BIN)/python -m pip install -q --no-compile --target $(@D) "cuda-python==$*" && touch $@
cuda-bindings: $(BINDING_DIRS)

# Fashion-MNIST (Debian package, MIT): the labelled set behind the accuracy gates.
data:
	@if [ -d /usr/share/datasets/fashion-mnist ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	else echo "Fashion-MNIST missing: run 'sudo apt-get install dataset-fashion-mnist'"; exit 1; fi

demo: $(VENV)/.setup-done
	$(BIN)/python deploy/build_engine.py --precision int8

test: setup cuda-bindings
	SCALABLEVIT_REQUIRE_BINDINGS=1 $(BIN)/python -m pytest -q --durations=15
	$(MAKE) check-py310 test-numpy test-kernels trt-surfaces-check

# JetPack 6 runs Python 3.10: a static check of the whole package (bundle.py's one 3.12 call is version-guarded).
# vermin sits in its own --target dir: a checker, not a dependency of the package.
VERMIN := vermin==1.9.2
$(VENV)/vermin/.done: | $(BIN)/python
	rm -rf $(@D) && $(BIN)/python -m pip install -q --no-compile --target $(@D) "$(VERMIN)" && touch $@
check-py310: $(VENV)/vermin/.done
	PYTHONPATH=$(abspath $(VENV))/vermin $(BIN)/python -c 'import sys, vermin; sys.exit(vermin.main())' -q -t=3.10- --no-tips \
		--violations --eval-annotations --exclude 'shutil.rmtree(onexc)' scalablevit deploy bench tools calib

# The device-side tests again under the oldest numpy Python 3.11 installs (JetPack 6 ships 1.21.5) and the oldest
# numpy 2 (the venv has the newest): each numpy in its own --target dir, first on PYTHONPATH.
NUMPY_VERSIONS := 1.23.5 2.0.2
DEVICE_TESTS := tests/test_check_device.py tests/test_engine.py tests/test_numerics.py tests/test_cuda_bindings.py
$(VENV)/numpy/%/.done: | $(BIN)/python
	rm -rf $(@D) && $(BIN)/python -m pip install -q --no-compile --no-deps --target $(@D) "numpy==$*" && touch $@
test-numpy: setup cuda-bindings $(foreach v,$(NUMPY_VERSIONS),$(VENV)/numpy/$(v)/.done)
	for v in $(NUMPY_VERSIONS); do \
		PYTHONPATH=$(abspath $(VENV))/numpy/$$v SCALABLEVIT_EXPECT_NUMPY=$$v SCALABLEVIT_REQUIRE_BINDINGS=1 \
		$(BIN)/python -m pytest -q -p no:cacheprovider $(DEVICE_TESTS) || exit 1; done

# The tests that compare with numbers stored on one machine (marker `numerics`), rerun on second kernel paths.
# PyTorch has a switch: its portable kernels (ATEN_CPU_CAPABILITY=default), natively. onnxruntime's MLAS picks its
# kernels from CPUID and has none, so its numerics tests run again under qemu emulating a CPU one ISA step below
# this one: an AVX2-only AMD EPYC (Rome) on an AVX-512 host, an SSE4.2-only Nehalem on an AVX2 host.
KERNEL_TESTS := -m "numerics and not slow" -p no:cacheprovider
EMULATED_TESTS := tests/test_check_device.py -m numerics -k onnxruntime -p no:cacheprovider
test-kernels: setup qemu
	ATEN_CPU_CAPABILITY=default $(BIN)/python -m pytest -q $(KERNEL_TESTS)
	@if [ "$$(uname -m)" != x86_64 ]; then echo "not x86_64: the emulation step is skipped"; \
	else cpu=$$(grep -qw avx512f /proc/cpuinfo && echo EPYC-Rome || echo Nehalem); echo "onnxruntime under qemu -cpu $$cpu"; \
	qemu-x86_64 -cpu $$cpu $(BIN)/python -m pytest -q $(EMULATED_TESTS); fi

qemu:
	@if [ "$$(uname -m)" != x86_64 ] || command -v qemu-x86_64 >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq qemu-user >/dev/null; \
	else echo "qemu-x86_64 missing: run 'sudo apt-get install qemu-user'"; exit 1; fi

# A GPU machine with a CUDA build of PyTorch and cuda-python (no TensorRT): CUDA-layer tests, S parity and latency.
# Uses the Python on PATH (the machine's own CUDA torch), never this Makefile's CPU venv.
device-check:
	PYTHONPATH=$(CURDIR) python3 bench/device_check.py --out out/device-check.json

# Rebuild the committed TensorRT API surfaces from PyPI's bindings wheels (pip download into ~/.cache) and compare
# byte for byte; needs network, gcc and binutils (nm/readelf), CPython 3.11 on x86_64 (tools/trt_surface.py).
trt-surfaces-check: $(VENV)/.setup-done gcc
	$(BIN)/python tools/trt_surface.py --check

gcc:
	@if command -v gcc >/dev/null && command -v readelf >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq gcc binutils >/dev/null; \
	else echo "gcc or binutils missing: run 'sudo apt-get install gcc binutils'"; exit 1; fi
