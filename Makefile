# qubelet: two commands on a fresh machine.
#   make demo   set up .venv and run the local hybrid circuit-cutting job
#   make test   set up .venv and run ruff, mypy and pytest
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev
DEMO_DIR ?= runs/demo
PROTO_OUT := .

.PHONY: venv demo test lint typecheck pytest bench protos gpu clean

venv: $(STAMP)

# uv resolves the qiskit/iqm/kubernetes stack in about a minute; the build constraint keeps
# old sdists that still import pkg_resources (ibm-platform-services) buildable.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -U pip uv
	$(VENV)/bin/uv pip install --python $(PY) --build-constraint .ci/build-constraints.txt -e '.[dev]'
	touch $(STAMP)

# The paper's size rule (every 5-qubit subexperiment on the noisy fake QPU), then the telemetry
# policy fitted on that run's telemetry, on the same circuit: tables, timelines, summaries.
demo: venv
	rm -rf $(DEMO_DIR)
	$(VENV)/bin/qubelet run --policy size --run-dir $(DEMO_DIR)/size
	$(VENV)/bin/qubelet policy fit --telemetry $(DEMO_DIR)/size/telemetry.jsonl -o $(DEMO_DIR)/policy-model.json
	$(VENV)/bin/qubelet run --policy telemetry --policy-model $(DEMO_DIR)/policy-model.json --run-dir $(DEMO_DIR)/telemetry

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

pytest: venv
	$(VENV)/bin/pytest

test: lint typecheck pytest

bench: venv
	for b in bench/*.py; do $(PY) $$b || exit 1; done

# Regenerate the committed gRPC stubs from the protos (tests/test_protos_current.py checks them).
protos: venv
	$(PY) -m qubelet.protos

# Swap qiskit-aer for qiskit-aer-gpu (same import name) on a machine with CUDA 12. Order matters:
# uninstalling qiskit-aer after would delete the files both wheels share.
gpu: venv
	$(VENV)/bin/uv pip uninstall --python $(PY) qiskit-aer
	$(VENV)/bin/uv pip install --python $(PY) 'qiskit-aer-gpu>=0.18.2,<0.19'
	$(PY) -c "from qiskit_aer import AerSimulator; print('Aer devices:', AerSimulator().available_devices())"

clean:
	rm -rf $(VENV) runs .mypy_cache .ruff_cache .pytest_cache
