# qubelet: two commands on a fresh machine.
#   make demo   set up .venv and run the local hybrid circuit-cutting job
#   make test   set up .venv and run ruff, mypy and pytest (the e2e tests too, when the control
#               plane is built; they skip with the reason otherwise)
#   make cluster-up / cluster-down   a real local control plane (Kubernetes, Kueue, qubelet's
#               daemons) to try `qubelet submit` and the admission flow on; needs Go once
#   make e2e    only the e2e suite (tests/e2e) on that control plane
#
# The install is locked: uv.lock pins every package (and its hashes) that CI tested, and
# `uv sync --locked` installs exactly that set, failing if pyproject.toml changed without a new
# lock. After adding or changing a dependency in pyproject.toml run `make lock` (that is,
# `.venv/bin/uv lock`) and commit uv.lock together with pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.installed-dev
DEMO_DIR ?= runs/demo
PROTO_OUT := .
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: venv lock demo test lint typecheck pytest bench protos metrics-doc gpu clean controlplane cluster-up cluster-down e2e

venv: $(STAMP)

# Bootstrap uv into the venv once (uv is also in the dev extra, so the sync keeps it), then install
# the locked set with the dev extra. Bytecode is compiled at install because CI and the images
# run with PYTHONDONTWRITEBYTECODE=1 and would otherwise recompile every module on every start.
# The setuptools<81 build constraint for old sdists lives in pyproject.toml ([tool.uv]).
$(UV):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -U pip uv

$(STAMP): pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --extra dev --compile-bytecode
	touch $(STAMP)

# Re-resolve uv.lock after editing dependencies in pyproject.toml (then `make venv` installs it).
lock: | $(UV)
	$(UV) lock

# The paper's size rule (every 5-qubit subexperiment on the noisy fake QPU, ZNE-mitigated with the
# default extrapolation, spelled out), then the telemetry policy fitted on that run's telemetry,
# on the same circuit: tables, timelines, summaries.
demo: venv
	rm -rf $(DEMO_DIR)
	$(VENV)/bin/qubelet run --policy size --mitigation zne --zne-scales 1,3,5 --zne-extrapolation linear \
		--shots 65536 --run-dir $(DEMO_DIR)/size
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

# The real control plane (test tooling): etcd, kube-apiserver, kube-scheduler,
# kube-controller-manager, kubectl and Kueue built from the Go modules in hack/controlplane into
# .cache/controlplane (reused while their go.mod/go.sum are unchanged; override the place with
# QUBELET_CONTROLPLANE_CACHE). The first build takes tens of minutes.
controlplane:
	bash hack/controlplane/build.sh

# Everything hack/cluster.py starts is on loopback; the last line printed is the kubeconfig.
CLUSTER_STATE ?= .cluster
cluster-up: venv
	$(PY) hack/cluster.py up --state-dir $(CLUSTER_STATE)

cluster-down:
	$(PY) hack/cluster.py down --state-dir $(CLUSTER_STATE)

# QUBELET_E2E_BUILD=1 builds the control plane first if needed (CI=true does too).
e2e: venv
	$(VENV)/bin/pytest -m e2e tests/e2e

bench: venv
	for b in bench/*.py; do $(PY) $$b || exit 1; done

# Regenerate docs/metrics.md from the metric definitions (tests/test_metrics_exposition.py checks it).
metrics-doc: venv
	$(PY) -m qubelet.metrics_doc

# Regenerate the committed gRPC stubs from the protos (tests/test_protos_current.py checks them).
protos: venv
	$(PY) -m qubelet.protos

# Swap qiskit-aer for qiskit-aer-gpu (same import name) on a machine with CUDA 12. Order matters:
# uninstalling qiskit-aer after would delete the files both wheels share. `make venv` after a
# change to uv.lock puts the locked CPU wheel back.
gpu: venv
	$(UV) pip uninstall --python $(PY) qiskit-aer
	$(UV) pip install --python $(PY) 'qiskit-aer-gpu>=0.18.2,<0.19'
	$(PY) -c "from qiskit_aer import AerSimulator; print('Aer devices:', AerSimulator().available_devices())"

clean:
	rm -rf $(VENV) runs .mypy_cache .ruff_cache .pytest_cache
