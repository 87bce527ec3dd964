# The README's two commands. Each sets up .venv itself on a machine with nothing but Python.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
OUT    ?= saved_models

.PHONY: study test sync-check clean-venv readme docs browser submission-page

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## The whole study on the embedded default dataset, the executed submission notebook and submission.zip.
study: $(STAMP)
	$(BIN)/tl-fastai study --preset auto --out $(OUT)
	$(BIN)/tl-fastai notebook --out $(OUT) --execute
	$(BIN)/tl-fastai zip --out $(OUT)
	@echo "Results: $(OUT)/ (runs, study.json, figures), notebook.ipynb, submission.zip"

## Library in sync with nbs/, the notebooks' tests (run by `make docs`, which executes every cell nbdev-test runs),
## then pytest, whose tests/test_docs.py opens the built site in headless Chromium.
test: $(STAMP) sync-check docs browser
	$(BIN)/python -m pytest -q

## The documentation site in _docs/ (open _docs/index.html): every notebook executed as nbdev-test does, with
## nbdev's docs processors (show_doc for every export); fails on an error or on a page showing a traceback or a path.
docs: $(STAMP)
	$(BIN)/python tools/docs.py --out _docs

## Headless Chromium for tests/test_docs.py (Debian's package; needs root, as in CI).
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "Chromium could not be installed: tests/test_docs.py will be skipped (apt-get install chromium)."

## nbs/submission.ipynb, the site's study walkthrough, from an executed study notebook (default $(OUT)/notebook.ipynb).
submission-page: $(STAMP)
	$(BIN)/python tools/docs.py --submission $(OUT)/notebook.ipynb --study $(OUT)

## Fail if nbdev-export would change tl_fastai/ (the library must be exported from nbs/).
sync-check: $(STAMP)
	@rm -rf $(VENV)/sync && mkdir -p $(VENV)/sync && cp -r tl_fastai $(VENV)/sync/before
	$(BIN)/nbdev-export
	@diff -r -x __pycache__ $(VENV)/sync/before tl_fastai >/dev/null || { \
	  echo "tl_fastai/ is out of sync with nbs/: run nbdev-export and commit the result."; \
	  diff -r -x __pycache__ $(VENV)/sync/before tl_fastai | head -40; exit 1; }

clean-venv:
	rm -rf $(VENV)

## README.md from nbs/index.ipynb.
readme: $(STAMP)
	$(BIN)/python tools/nb2readme.py
