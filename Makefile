# The README's two commands. Each sets up .venv itself on a machine with nothing but Python.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
OUT    ?= saved_models

.PHONY: study test sync-check clean-venv readme

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

## Library in sync with nbs/, notebook tests, then pytest.
test: $(STAMP) sync-check
	$(BIN)/nbdev-test --n-workers 1
	$(BIN)/python -m pytest -q

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
