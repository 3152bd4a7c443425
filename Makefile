# Two commands set everything up on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# The CPU build of torch keeps installs small. With a GPU: `make install TORCH_SPEC=torch`
# (or install your CUDA build of torch into .venv first; an importable torch is kept).
TORCH_SPEC ?= torch==2.13.0
QUERY ?= my thermostat forgets its schedule at night

export DAGSTER_HOME ?= $(CURDIR)/data/dagster
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export LANCEDB_LOG ?= error

.PHONY: install run sync register search test test-fast dev bench bench-smoke bench-peer lint sample clean prod-up prod-run prod-down

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# The instance's settings live in the package (a dagster.yaml at the repository root would be
# read by nothing and warned about by `dagster dev`); DAGSTER_HOME gets a copy.
$(DAGSTER_HOME)/dagster.yaml: embedding_assets/instance.yaml
	mkdir -p $(DAGSTER_HOME)
	cp embedding_assets/instance.yaml $@

run: install $(DAGSTER_HOME)/dagster.yaml  ## install, sync the sample data, run one example search
	$(VENV)/bin/embedding-assets sync
	$(VENV)/bin/embedding-assets search "$(QUERY)" -k 5

sync: install $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/embedding-assets sync

register: install $(DAGSTER_HOME)/dagster.yaml  ## add the landing zone's batches as partitions (idempotent)
	$(VENV)/bin/embedding-assets register

TEST_WORKERS ?= 2
test: install  ## the whole suite, as CI runs it (TEST_WORKERS processes; 2 on CI's 2 cores), then its 15 slowest tests
	$(VENV)/bin/pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadgroup --durations=15

test-fast: install
	$(VENV)/bin/pytest -q -m "not slow and not model"

SENSOR_INTERVAL ?= 30
dev: install $(DAGSTER_HOME)/dagster.yaml  ## the Dagster UI and daemon on http://127.0.0.1:3000
	EA_SENSOR_INTERVAL_S=$(SENSOR_INTERVAL) $(VENV)/bin/dagster dev -w workspace.yaml

bench: install  ## benchmarks as ratios against same-run baselines -> bench/results/<date>.{json,md} (long)
	$(PY) -m bench $(BENCH_ARGS)

bench-smoke: install  ## the same code at toy sizes, in seconds (figures mean nothing)
	$(PY) -m bench --smoke

bench-peer: install  ## side by side with LangChain index() + SQLRecordManager + LanceDB (installs the peer extra)
	$(PIP) install -q -e ".[peer]"
	$(PY) -m bench --only peer

lint: install
	$(VENV)/bin/ruff format --check embedding_assets embedding_assets_tests bench
	$(VENV)/bin/ruff check embedding_assets embedding_assets_tests bench
	$(VENV)/bin/mypy embedding_assets

# The production profile: the Dagster instance in Postgres, the lake and the index on S3 (moto's
# server on 127.0.0.1:5555 here; unset AWS_ENDPOINT_URL and set real credentials for AWS).
PROD_ENV = DAGSTER_HOME=$(CURDIR)/data/prod/dagster \
	DAGSTER_PG_URL=$${DAGSTER_PG_URL:-postgresql://postgres@127.0.0.1:5432/embedding_assets} \
	EA_LAKE_URI=$${EA_LAKE_URI:-s3://embedding-assets/lake} \
	EA_LANCEDB_URI=$${EA_LANCEDB_URI:-s3://embedding-assets/lancedb} \
	AWS_ENDPOINT_URL=$${AWS_ENDPOINT_URL-http://127.0.0.1:5555} AWS_ALLOW_HTTP=$${AWS_ALLOW_HTTP:-true} \
	AWS_ACCESS_KEY_ID=$${AWS_ACCESS_KEY_ID:-testing} AWS_SECRET_ACCESS_KEY=$${AWS_SECRET_ACCESS_KEY:-testing} \
	AWS_REGION=$${AWS_REGION:-us-east-1} EA_EXECUTOR=$${EA_EXECUTOR:-celery} \
	EA_BROKER_URL=$${EA_BROKER_URL:-amqp://guest:guest@127.0.0.1:5672//}

prod-up: install  ## the production profile's services: the database, moto's S3 and its bucket, 2 Celery workers
	$(PROD_ENV) $(PY) -m embedding_assets.prod up

prod-run: install  ## sync and one example search on the production profile
	$(PROD_ENV) $(VENV)/bin/embedding-assets sync
	$(PROD_ENV) $(VENV)/bin/embedding-assets search "$(QUERY)" -k 5

prod-down:  ## stop what prod-up started (by the process ids under data/prod/)
	$(PROD_ENV) $(PY) -m embedding_assets.prod down

sample:  ## regenerate the committed sample landing data
	$(PY) -m embedding_assets.samplegen data

clean:  ## remove generated state (lake, index, Dagster instance); keeps .venv and the sample
	rm -rf data/lake data/lancedb data/dagster
