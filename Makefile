# The two fresh-machine commands of the README: `make demo` and `make test`.
PY ?= python3
PIP ?= $(PY) -m pip
APT_PKGS = libportaudio2 libasound2-plugins pulseaudio pulseaudio-utils libsndfile1

.PHONY: demo test system-deps install-runtime install-test bench report gpu-bundle

# Debian packages: PortAudio for sounddevice, PulseAudio for the live tests (no sound card needed).
system-deps:
	@if command -v apt-get >/dev/null 2>&1; then \
	  missing=$$(for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then \
	    SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	      --no-install-recommends $$missing; \
	  fi; \
	else echo "no apt-get: install PortAudio and PulseAudio with your package manager"; fi

# numba caches its compiled kernels beside the installed modules; pip's uninstall (when one
# install replaces the other) leaves them, and the bare folder would then shadow the editable
# install as a namespace package: remove a leftover rtdenoise folder without __init__.py.
STALE = $(PY) -c "import pathlib, shutil, sysconfig; \
	d = pathlib.Path(sysconfig.get_paths()['purelib'], 'rtdenoise'); \
	d.is_dir() and not (d / '__init__.py').exists() and shutil.rmtree(d)"

install-runtime: system-deps
	$(PIP) install -q .
	@$(STALE)

install-test: system-deps
	$(PIP) install -q -e '.[test]'
	@$(STALE)

# Denoise the bundled example clip with the shipped default model (ONNX Runtime, no torch).
demo: install-runtime
	rtdenoise file examples/demo_noisy.wav demo_denoised.wav

test: install-test
	$(PY) -m pytest -q

bench: install-test
	$(PY) -m pytest benchmarks -q --benchmark-only

report: system-deps
	$(PIP) install -q -e '.[test,bench]'
	$(PY) -m benchmarks.compare && $(PY) -m benchmarks.report

# What a lent GPU machine needs beside the repository (64 MiB travel in all, its image has no
# soundfile): a 40 MB speaker-balanced subset of the corpus as encoded shards, and the wheels of
# soundfile for its Python 3.12. Then one call: training/gpu_run.sh says how.
CORPUS ?= ../shared/data/corpus
gpu-bundle: install-test
	$(PY) -m training.pack --clean $(CORPUS)/train/clean --noise $(CORPUS)/train/noise \
	    --out shards/gpu --budget-mb 40
	$(PIP) download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	    --platform manylinux2014_x86_64 -d .whl soundfile==0.14.0 cffi==2.1.1 pycparser==3.12
