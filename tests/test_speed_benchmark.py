"""The speed benchmark's smoke mode: ``benchmarks.speed.run`` on one tiny size and the skew check, in
a Spark session of this worker's (``python -m benchmarks.speed`` builds one session and calls the same function;
tests/test_benchmark.py checks its slopes and fits between sizes on made-up figures).

Figures at this size mean nothing; what is checked is that every stage and every limit it is
compared with ran on the same data and that the report's sums hold together.
"""

from __future__ import annotations

import pytest

# A worker of its own, with a session of its own: on the shared session's worker it came last and ran alone.
pytestmark = pytest.mark.xdist_group("speed")
STAGES = {"sequences", "reference", "train", "loader", "infer", "forward"}


@pytest.fixture(scope="module")
def report(spark, tmp_path_factory):
    """Each size has its own database and MLflow store (under a folder of its own), as under the command."""
    from benchmarks.speed import STAGES as ORDER
    from benchmarks.speed import Setup, run

    setup = Setup(None, {"model": {"dim": 32}, "spark": {"master": "local[2]", "shuffle_partitions": 2}},
                  tmp_path_factory.mktemp("bench"))
    return run(spark, setup, [3000], None, 1, ORDER, skew=(20, 3000), log=lambda _: None)


def test_every_stage_and_its_limit_ran_at_every_size(report):
    assert len(report["sizes"]) == 1
    for size in report["sizes"]:
        assert set(size["stages"]) == STAGES
        for figures in size["stages"].values():
            assert figures["wall_s"] > 0 and figures["peak_driver_mb"] > 0
        assert size["stages"]["train"]["peak_workers_mb"] > 0  # the training processes were seen
        assert set(size["ratios"]) == {"sequences_vs_reference", "loader_vs_training_process", "infer_vs_forward"}


def test_the_limits_are_measured_on_the_same_data_as_the_stages(report):
    for size in report["sizes"]:
        s = size["stages"]
        # One process reading every file yields exactly the windows the two training ranks shared.
        assert s["loader"]["positions"] == s["train"]["positions"] > 0
        assert s["infer"]["users"] == s["forward"]["users"] == s["sequences"]["users"]
        assert size["outputs"]["user_profile_embeddings"]["rows"] == s["infer"]["users"]
        # The reference sees users with behaviour or preference events; the stage adds social-only users.
        assert 0 < s["reference"]["users"] <= s["sequences"]["users"]
        assert size["ingest"]["behaviour_events"] == size["outputs"]["behaviour_events"]["rows"]


def test_skew_keeps_the_total_and_one_size_gives_no_slopes(report):
    assert report["slopes"] == {} and report["linear_fits"] == {}  # a line needs two sizes
    skew = report["skew"]
    heavy, spread = skew["with_heavy_user"]["events"], skew["without"]["events"]
    assert heavy - skew["heavy_events"] > 0  # the normal users' events are there too
    assert abs(heavy - spread) / heavy < 0.25  # the same total, give or take the generator's draws
    assert skew["ratio"] > 0
