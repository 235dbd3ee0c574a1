# The two commands a new user needs: `make demo` (the main job) and `make test` (the test suite).
# Both create and fill a local virtual environment in .venv by themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
STAMP  := $(VENV)/.installed
DEMO   ?= runs/demo
DEMO_N ?= 5000
DEMO_SEED ?= 7

.PHONY: install demo test test-fast browser clean help

help:
	@echo "make demo   simulate electron/photon crops, train ResNet-15 and a ViT (K-fold), write $(DEMO)/report.html"
	@echo "make test   run the test suite (what CI runs)"

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

demo: $(STAMP)
	$(BIN)/e2evision simulate egamma --n $(DEMO_N) --out $(DEMO)/data --seed $(DEMO_SEED)
	$(BIN)/e2evision inspect $(DEMO)/data
	$(BIN)/e2evision train configs/egamma_resnet15.yaml --data $(DEMO)/data --out $(DEMO)/resnet15
	$(BIN)/e2evision train configs/egamma_vit.yaml --data $(DEMO)/data --out $(DEMO)/vit
	$(BIN)/e2evision report $(DEMO)/resnet15 $(DEMO)/vit --out $(DEMO)/report.html
	@echo "Report written to $(DEMO)/report.html"

test: $(STAMP) browser
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not browser"

clean:
	rm -rf $(VENV) runs .pytest_cache build
