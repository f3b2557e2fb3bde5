"""The Airflow DAG cannot import profiling (it runs in Airflow's own environment), so it writes the
Delta settings of its spark-submit lines out; they must stay those profiling builds sessions with."""

from __future__ import annotations

import ast
from pathlib import Path

from profiling.spark import DELTA_SQL_CONF, delta_package

DAG = Path(__file__).resolve().parent.parent / "jobs" / "profiling_daily.py"


def _dag_constant(name: str):
    """A literal assigned at the DAG file's top level, read without importing the file (it imports Airflow)."""
    for node in ast.parse(DAG.read_text()).body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == [name]:
            return ast.literal_eval(node.value)
    raise AssertionError(f"{DAG} assigns no {name}")


def test_the_dag_submits_the_installed_delta_package_and_its_sql_settings():
    assert _dag_constant("DELTA_PACKAGE") == delta_package()
    assert _dag_constant("DELTA_CONF") == DELTA_SQL_CONF
