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

# constraints.txt pins every package of a tested install, so a fresh install is reproducible.
# --no-compile: Python compiles the modules a run imports when it first imports them, instead of pip
# compiling all of torch, pyspark and mlflow up front (half the install's time).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet --no-compile -c constraints.txt -e ".[dev]"
	touch $(STAMP)

# constraints-airflow.txt: pip freeze of apache-airflow 3.3.2 + apache-airflow-providers-apache-spark 6.3.4.
$(AIRFLOW_STAMP): constraints-airflow.txt
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/pip install --quiet --upgrade pip
	$(AIRFLOW_VENV)/bin/pip install --quiet --no-compile -r constraints-airflow.txt
	touch $(AIRFLOW_STAMP)

demo: $(STAMP)
	$(VENV)/bin/profiling demo

# Three pytest-xdist workers: most tests wait on JVMs they started (tests/conftest.py groups them).
PYTEST_WORKERS ?= 3

# The two environments install side by side: pip waits on the disk as much as on the CPU.
test:
	$(MAKE) --no-print-directory --jobs=2 $(STAMP) $(AIRFLOW_STAMP)
	$(VENV)/bin/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup --no-loadscope-reorder $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(AIRFLOW_VENV) work
