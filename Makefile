# The two commands a new user needs: `make up` (Elasticsearch + service + watchdog) and `make test`.
# Every target sets itself up on a fresh machine: virtualenv, dependencies, data, model.

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
MODEL_DIR ?= models/blip-vqa-small
PYTEST_ARGS ?=

.PHONY: help venv data model elasticsearch prereqs kube cluster push-remote up test lint bench images clean-data

help:
	@echo "make up           start Elasticsearch, the VQA service on 127.0.0.1:5000 and the watchdog (local trigger)"
	@echo "make test         run every test (installs what they need first: make prereqs; starts its own"
	@echo "                  Elasticsearch and Kubernetes control plane)"
	@echo "make model        rebuild the small BLIP model in $(MODEL_DIR) (about 20 minutes on 2 cores)"
	@echo "make bench        run the benchmarks recorded in docs/BENCHMARKS.md"
	@echo "make cluster      a local Kubernetes control plane with a fake node (kwok), until Ctrl-C"
	@echo "make push-remote  a local git remote: \`git push pipeline main\` runs the six pipeline stages"

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

venv: $(STAMP)

data/VQA_Dataset.csv: | $(STAMP)
	$(PY) -m scripts.prepare_data

data: data/VQA_Dataset.csv

$(MODEL_DIR)/config.json: | data/VQA_Dataset.csv
	$(PY) -m scripts.build_base_model --out $(MODEL_DIR)

model: data
	$(PY) -m scripts.build_base_model --out $(MODEL_DIR)

elasticsearch: $(STAMP)
	bash .ci/install_elasticsearch.sh

# Everything `make test` needs beyond the virtualenv, one idempotent install step per line: a warm run
# only checks (seconds). A step that needs root uses sudo where it works, or stops with the command to
# run as root.
prereqs: $(STAMP)
	bash .ci/install_elasticsearch.sh
	bash .ci/install_docker.sh
	bash docker/make_base_image.sh
	bash .ci/install_ansible.sh
	bash .ci/install_kube.sh
	bash .ci/install_groovy_lint.sh

kube: $(STAMP)
	bash .ci/install_kube.sh

cluster: kube
	$(PY) -m infra.kube.cluster run

push-remote: $(STAMP)
	$(PY) -m infra.push_remote init

up: $(STAMP) data/VQA_Dataset.csv $(MODEL_DIR)/config.json elasticsearch
	$(PY) -m scripts.stack up

test: prereqs data/VQA_Dataset.csv $(MODEL_DIR)/config.json
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP) data/VQA_Dataset.csv
	$(PY) -m scripts.bench_predict

images: $(STAMP)
	docker/build_images.sh

clean-data:
	rm -rf data/images data/VQA_Dataset.csv data/spool data/adapters data/pipeline
