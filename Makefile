# The README's two commands: `make demo` (the main job on the bundled face) and `make test`.
# Each creates .venv if it is missing and installs the package (building its Cython kernels).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
OUT := out

.PHONY: demo test bench clean

$(STAMP): pyproject.toml setup.py $(wildcard ext/*.pyx ext/*.pxd)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	mkdir -p $(OUT)
	$(BIN)/coverage-planner zones --png $(OUT)/zones.png
	$(BIN)/coverage-planner plan --out $(OUT)/PLAN.json
	$(BIN)/coverage-planner report $(OUT)/PLAN.json > $(OUT)/report.txt
	$(BIN)/coverage-planner verify $(OUT)/PLAN.json
	$(BIN)/coverage-planner show $(OUT)/PLAN.json --png $(OUT)/plan.png --html $(OUT)/plan.html

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	mkdir -p benchmarks/results
	$(BIN)/coverage-planner bench --json benchmarks/results/bench.json

clean:
	rm -rf build dist src/*.egg-info $(OUT) ext/*.c src/coverage/_ext/*.so
