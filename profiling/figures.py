"""Pictures of profiles, drawn with matplotlib's object API (no pyplot state, no display needed).

:func:`profile_figure` draws one explanation (the dict of :mod:`profiling.explain`):
interest weights, category and source weights as bars, and the interests'
attention over the user's newest events as a heat map. :func:`run_summary_figure`
draws what a whole run's profiles look like. Both have a fixed size in pixels.
"""

from __future__ import annotations

import textwrap

import numpy as np
from matplotlib.figure import Figure

PROFILE_SIZE = (14.0, 9.0)  # inches at DPI: 1400 x 900 pixels
SUMMARY_SIZE = (12.0, 5.0)  # 1200 x 500 pixels
DPI = 100


def _short(text: str | None, width: int = 24) -> str:
    return textwrap.shorten(text or "-", width=width, placeholder="…")


def interest_label(interest: dict) -> str:
    """'#k: c02 89%' — an interest named by its heaviest category and any other holding 20 % of it."""
    cats = interest["categories"]
    shown = [c for i, c in enumerate(cats[:2]) if i == 0 or c["share"] >= 0.2]
    named = " · ".join(f"{_short(c['category'], 14)} {c['share']:.0%}" for c in shown) or "no category"
    return f"#{interest['interest']}: {named}"


def _bars(ax, labels: list[str], values: list[float], title: str, xlabel: str, color: str) -> None:
    y = np.arange(len(labels))
    ax.barh(y, values, color=color)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()  # heaviest on top
    ax.set_xlim(0, max([*values, 1e-9]) * 1.25)
    for yi, v in zip(y, values):
        ax.text(v, yi, f" {v:.2f}", va="center", fontsize=8)
    ax.set_title(title)
    ax.set_xlabel(xlabel)


def profile_figure(doc: dict) -> Figure:
    """Bars of interest, category and source weights over a heat map of attention on the newest events."""
    fig = Figure(figsize=PROFILE_SIZE, dpi=DPI, layout="constrained")
    grid = fig.add_gridspec(2, 3, height_ratios=[1, 1.35])
    interests = doc["interests"]
    _bars(fig.add_subplot(grid[0, 0]), [interest_label(i) for i in interests], [i["weight"] for i in interests],
          "Interests", "interest weight (share of the user's events)", "#4C72B0")
    cats = doc["dimensions"]["category"][:8]
    _bars(fig.add_subplot(grid[0, 1]), [_short(c["key"]) for c in cats], [c["weight"] for c in cats],
          "Categories (top 8)", "category weight", "#55A868")
    sources = doc["dimensions"]["source"]
    _bars(fig.add_subplot(grid[0, 2]), [s["key"] for s in sources], [s["weight"] for s in sources],
          "Sources", "source weight", "#C44E52")

    ax = fig.add_subplot(grid[1, :])
    events = doc["recent_events"]["events"]
    by_index = {i["interest"]: i for i in interests}
    order = [i["interest"] for i in interests]
    attention = np.asarray(doc["recent_events"]["attention"], dtype=float).reshape(len(order), len(events))
    image = ax.imshow(attention[order], aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_yticks(range(len(order)), [interest_label(by_index[k]) for k in order])
    ax.set_xticks(range(len(events)),
                  [f"{_short(e['title'] or e['item_id'] or e['attribute'], 22)}\n{e['event_type'] or '-'}"
                   for e in events], rotation=90, fontsize=7)
    ax.set_xlabel("the user's newest events, oldest to newest (item or preference, event type)")
    ax.set_title("Attention of each interest over the newest events")
    fig.colorbar(image, ax=ax, label="attention weight", fraction=0.03, pad=0.01)
    fig.suptitle(f"Profile of user {_short(doc['user_id'], 40)} — snapshot {doc['snapshot_date']}, "
                 f"model version {doc['model_version']}", fontsize=13)
    return fig


def run_summary_figure(strong_counts: dict[int, int], source_weights: dict[str, list[float]],
                       threshold: float, interests: int) -> Figure:
    """Users by number of strong interests, and the spread of source weights across users."""
    fig = Figure(figsize=SUMMARY_SIZE, dpi=DPI, layout="constrained")
    left, right = fig.subplots(1, 2)
    counts = [strong_counts.get(k, 0) for k in range(interests + 1)]
    left.bar(range(interests + 1), counts, color="#4C72B0")
    left.set_xticks(range(interests + 1))
    left.set_xlabel(f"strong interests per user (weight ≥ {threshold:g})")
    left.set_ylabel("users")
    left.set_title("How many interests a user has")
    bins = np.linspace(0, 1, 21)
    for source, values in sorted(source_weights.items()):
        right.hist(values, bins=bins, histtype="step", linewidth=2, label=f"{source} ({len(values)} users)")
    right.set_xlabel("source weight in the user's profile")
    right.set_ylabel("users")
    right.set_title("How much each log counts, across users")
    if source_weights:
        right.legend()
    total = sum(counts)
    fig.suptitle(f"Profiles of this run: {total:,} users", fontsize=13)
    return fig


def save_png(fig: Figure, path) -> None:
    fig.savefig(path, format="png", dpi=DPI)
