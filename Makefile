# The two fresh-machine commands of the README: `make demo` and `make test`.
PY ?= python3
PIP ?= $(PY) -m pip
APT_PKGS = libportaudio2 libasound2-plugins pulseaudio pulseaudio-utils libsndfile1

.PHONY: demo test system-deps install-runtime install-test bench report

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
