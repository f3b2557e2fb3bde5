"""The benchmarks' pure parts: the quality report against the best peer of each metric, the speed report's slopes."""

from __future__ import annotations

from profiling.benchmark import DatasetBenchmark, format_table

FIGURES = {"recall@10": 0.12, "ndcg@10": 0.06, "recall@50": 0.4, "ndcg@50": 0.12}


def _result() -> DatasetBenchmark:
    peers = {"SASRec": {"recall@10": 0.10, "ndcg@10": 0.05, "recall@50": 0.39, "ndcg@50": 0.11, "seconds": 900},
             "GRU4Rec": {"recall@10": 0.08, "ndcg@10": 0.055, "recall@50": 0.3, "ndcg@50": 0.1}}
    models = {"profiling": FIGURES, "popularity": {k: v / 2 for k, v in FIGURES.items()}}
    return DatasetBenchmark("ml-100k", 250.0, 900, models, peers)


def test_ratios_are_taken_against_the_best_peer_of_each_metric():
    out = _result().to_dict()
    assert out["vs_best_peer"]["recall@10"] == {"best_peer": "SASRec", "ratio": 1.2}
    assert out["vs_best_peer"]["ndcg@10"] == {"best_peer": "GRU4Rec", "ratio": round(0.06 / 0.055, 3)}


def test_the_table_lists_every_model_and_peer_with_the_run_time():
    table = format_table([_result()])
    rows = [line for line in table.splitlines() if line.startswith("| ml-100k")]
    assert [r.split(" | ")[1] for r in rows] == ["profiling", "popularity", "SASRec (peer)", "GRU4Rec (peer)"]
    assert rows[0].endswith("| 250 s |") and rows[2].endswith("| 900 s |")
    assert "ml-100k: profiling recall@10 = 1.20 x best peer (SASRec)" in table


def test_a_baseline_that_could_not_be_fitted_is_a_row_that_says_so():
    result = _result()
    result.models["als"] = None
    row = next(line for line in format_table([result]).splitlines() if line.startswith("| ml-100k | als |"))
    assert row.split(" | ")[2] == "not fitted"


def test_the_speed_benchmarks_slopes_and_fits_between_sizes():
    from benchmarks.speed import linear_fits, slopes

    walls = {1000: {"sequences": 2.0, "train": 5.0, "infer": 1.0}, 4000: {"sequences": 8.0, "train": 5.0, "infer": 2.0},
             16000: {"sequences": 32.0, "train": 5.0, "infer": 4.0}}
    sizes = [{"events": n, "stages": {s: {"wall_s": w} for s, w in stages.items()}} for n, stages in walls.items()]
    got = slopes(sizes[::-1])  # any order: sizes are sorted by events
    assert got == {"sequences": [{"from": 1000, "to": 4000, "slope": 1.0}, {"from": 4000, "to": 16000, "slope": 1.0}],
                   "train": [{"from": 1000, "to": 4000, "slope": 0.0}, {"from": 4000, "to": 16000, "slope": 0.0}],
                   "infer": [{"from": 1000, "to": 4000, "slope": 0.5}, {"from": 4000, "to": 16000, "slope": 0.5}]}
    fits = linear_fits(sizes)
    assert fits["sequences"] == {"fixed_s": 0.0, "s_per_million_events": 2000.0, "max_relative_miss": 0.0}
    assert fits["train"] == {"fixed_s": 5.0, "s_per_million_events": 0.0, "max_relative_miss": 0.0}
    assert fits["infer"]["max_relative_miss"] > 0  # a square root is no line
