"""Every SQL example in the README runs against a real pipeline run and returns rows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
QUERIES = re.findall(r"```sql\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_sql_examples():
    assert len(QUERIES) >= 4


@pytest.mark.parametrize("query", QUERIES, ids=[f"sql{i}" for i in range(len(QUERIES))])
def test_readme_sql_runs_and_returns_rows(pipeline, spark, query):
    rows = spark.sql(query).collect()
    assert rows, f"no rows from:\n{query}"
    assert all(value is not None for row in rows for value in row)
