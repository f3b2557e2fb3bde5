# Two commands on a fresh machine (Python 3.11 and Java 17 installed):
#   make demo   set up, then run the whole pipeline on generated data
#   make test   set up, then run the test suite
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed
# Airflow runs apart from profiling (its Spark provider's pyspark-client overlaps pyspark);
# only the Airflow test needs it.
AIRFLOW_VENV := .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed

.PHONY: setup demo test clean

setup: $(STAMP)

# constraints.txt pins every package of a tested install, so a fresh install is reproducible. uv installs
# it (pip installs uv, pinned here): from its cache it links the files instead of unpacking every wheel,
# which matters for torch's few GB. --compile-bytecode writes every module's .pyc once, here: where
# PYTHONDONTWRITEBYTECODE is set (as on our machines), every process would otherwise compile each module
# it imports from source, every time (torch, mlflow and pyspark: about 4 s of each console command).
UV := uv==0.13.9

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet $(UV)
	$(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(VENV)/bin/python -c constraints.txt -e ".[dev]"
	touch $(STAMP)

# constraints-airflow.txt: pip freeze of apache-airflow 3.3.2 + apache-airflow-providers-apache-spark 6.3.4.
$(AIRFLOW_STAMP): constraints-airflow.txt
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/pip install --quiet $(UV)
	$(AIRFLOW_VENV)/bin/uv pip install --quiet --compile-bytecode --python $(AIRFLOW_VENV)/bin/python \
		-r constraints-airflow.txt
	touch $(AIRFLOW_STAMP)

demo: $(STAMP)
	$(VENV)/bin/profiling demo

# Three pytest-xdist workers: most tests wait on JVMs they started (tests/conftest.py groups them).
PYTEST_WORKERS ?= 3

# The shared-mode tests start a PostgreSQL 15 server on 127.0.0.1: Debian's package, installed once.
PG_INITDB := /usr/lib/postgresql/15/bin/initdb
$(PG_INITDB):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-15

# The two environments install side by side.
test: $(PG_INITDB)
	$(MAKE) --no-print-directory --jobs=2 $(STAMP) $(AIRFLOW_STAMP)
	$(VENV)/bin/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup --no-loadscope-reorder $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(AIRFLOW_VENV) work
