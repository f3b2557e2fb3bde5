"""Every SQL example of the README and docs/ runs against a real pipeline run and returns rows."""

from __future__ import annotations

import pytest

from doc_pages import name, sql_blocks

QUERIES = sql_blocks()


def test_the_docs_have_sql_examples():
    assert len(QUERIES) >= 4


@pytest.mark.parametrize("block", QUERIES, ids=[f"{name(b.page)}-sql{i}" for i, b in enumerate(QUERIES)])
def test_docs_sql_runs_and_returns_rows(pipeline, spark, block):
    rows = spark.sql(block.body).collect()
    assert rows, f"no rows from ({name(block.page)}):\n{block.body}"
    assert all(value is not None for row in rows for value in row)
