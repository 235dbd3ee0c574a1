# The two commands a new user needs: `make demo` (the main job) and `make test` (the test suite).
# Both create and fill a local virtual environment in .venv by themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
STAMP  := $(VENV)/.installed
DEMO   ?= runs/demo
DEMO_N ?= 10000
DEMO_SEED ?= 7
DEMO_FOLDS ?= 2

# Seed 004's lensing pipeline (make lensing): simulate, features, tune the learning rate, ablation, report.
LENS   ?= runs/lensing
LENS_N ?= 900
LENS_TRIALS ?= 3
# CPU preset of configs/lensing_vit_sd_fused.yaml (GPU: LENS_SET= and more trials and images)
LENS_SET ?= --set model.name=vit_sd_micro --set preprocess.resize=[48,48] --set model.kwargs.patch_size=6 \
            --set train.folds=3 --set train.max_epochs=8 --set train.warmup_epochs=1 --set train.batch_size=32 \
            --set train.early_stopping_patience=null --set tune.n_startup_trials=2

.PHONY: install demo lensing test test-fast lint browser postgres onednn cpp clean help

help:
	@echo "make demo   simulate electron/photon crops, train ResNet-15 and a ViT (K-fold) and a physics baseline, write $(DEMO)/report.html"
	@echo "make test   run the test suite (what CI runs)"
	@echo "make lint   ruff check and ruff format --check (CI runs it before the tests)"
	@echo "make lensing  seed 004's lens pipeline at CPU size: ROI, features, tuned ViT-SD, ablation, $(LENS)/report.html"

$(STAMP): pyproject.toml constraints/ci.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints/ci.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Debian's chromium renders the report in the browser test; installed when we are root and it is missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the report's browser test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "WARNING: could not install chromium; the browser test will be skipped"; \
	  else echo "WARNING: chromium not found and not root; the browser test will be skipped"; fi; }

# Debian's PostgreSQL server backs the test of workers sharing an Optuna study; installed when root.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's postgresql for the shared-study test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
	      || echo "WARNING: could not install postgresql; the PostgreSQL test will be skipped"; \
	  else echo "WARNING: postgresql not found and not root; the PostgreSQL test will be skipped"; fi; }

# Debian's oneDNN 2.x backs the C++ engine's oneDNN backend (the .onednn export); installed when root.
onednn:
	@test -f /usr/include/oneapi/dnnl/dnnl.hpp || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's libdnnl-dev for the C++ engine's oneDNN backend"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libdnnl-dev >/dev/null) \
	      || echo "WARNING: could not install libdnnl-dev; the engine is built without its oneDNN backend"; \
	  else echo "WARNING: oneDNN not found and not root; the engine is built without its oneDNN backend"; fi; }

# The C++ inference engine (cpp/, docs/deployment.md) against the LibTorch inside the PyTorch wheel:
# configured once (only while cpp/build has no CMake cache), then built incrementally with -j2.
cpp: $(STAMP) onednn
	@test -f cpp/build/CMakeCache.txt || cmake -S cpp -B cpp/build -DCMAKE_BUILD_TYPE=Release \
	  -DCMAKE_PREFIX_PATH="$$($(BIN)/python -c 'import torch; print(torch.utils.cmake_prefix_path)')"
	cmake --build cpp/build -j2

demo: $(STAMP)
	$(BIN)/e2evision simulate egamma --n $(DEMO_N) --out $(DEMO)/data --seed $(DEMO_SEED)
	$(BIN)/e2evision inspect $(DEMO)/data
	$(BIN)/e2evision train configs/egamma_resnet15.yaml --data $(DEMO)/data --set train.folds=$(DEMO_FOLDS) --out $(DEMO)/resnet15
	$(BIN)/e2evision train configs/egamma_vit.yaml --data $(DEMO)/data --set train.folds=$(DEMO_FOLDS) --out $(DEMO)/vit
	$(BIN)/e2evision baseline configs/egamma_resnet15.yaml --data $(DEMO)/data --set train.folds=$(DEMO_FOLDS) --set name=physics_baseline --out $(DEMO)/baseline
	$(BIN)/e2evision report $(DEMO)/resnet15 $(DEMO)/vit $(DEMO)/baseline --out $(DEMO)/report.html
	@echo "Report written to $(DEMO)/report.html"

lensing: $(STAMP)
	$(BIN)/e2evision simulate lensing --n $(LENS_N) --out $(LENS)/data --seed $(DEMO_SEED) --workers 2
	$(BIN)/e2evision features $(LENS)/data
	$(BIN)/e2evision tune configs/lensing_vit_sd_fused.yaml --data $(LENS)/data --trials $(LENS_TRIALS) \
	  --study lens_lr --out $(LENS)/tune $(LENS_SET)
	$(BIN)/e2evision ablation $(LENS)/tune/best_config.yaml --out $(LENS)/ablation
	$(BIN)/e2evision report $(LENS)/ablation $(LENS)/tune --out $(LENS)/report.html --title "Dark-matter substructure: lens features and ViT-SD"
	@echo "Report written to $(LENS)/report.html"

test: $(STAMP) browser postgres cpp
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not browser"

# Lint and formatting as CI checks them (ruff's settings are in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache build
