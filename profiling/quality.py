"""Data-quality gates and the data-quality report of one ingest run.

A log that loses more than ``input.max_quarantined_share`` of its rows to the
quarantine (or more than ``input.max_reason_share[reason]`` to one reason) stops
the run: a scheduled job that goes green while ignoring most of a log is the
failure nobody sees. The report says, per log, what was read, accepted and
quarantined, why, and on which values, and which gate stopped the run.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

# Quarantine reason codes, in the order ingest checks them within a column (first match wins).
REASONS = {
    "malformed_row": "the record does not parse as CSV with the header's columns",
    "missing_value": "a required column is null, empty or whitespace only",
    "id_too_long": "an id is longer than its contract's max_length",
    "bad_encoding": "bytes that are not UTF-8",
    "bad_type": "a value of the wrong type: value not a number, or a numeric id that is not a whole number",
    "bad_timestamp": "ts neither a number of unix seconds nor a timestamp string",
    "negative_timestamp": "ts before 1970",
    "timestamp_in_milliseconds": "ts of 1e11 or more: milliseconds",
    "future_timestamp": "ts after the snapshot day plus input.future_tolerance_hours",
    "non_finite_value": "value NaN or infinite",
    "self_loop": "a social edge from a user to themselves",
    "unknown_event_type": "event_type not in input.event_types",
    "duplicate_row": "equal in every contract column to an earlier row",
}

# What to change when a reason stops a run, besides raising the ceiling.
_FIXES = {
    "unknown_event_type": "allow them with input.event_types",
    "timestamp_in_milliseconds": "set input.millisecond_timestamps: convert",
    "future_timestamp": "check --snapshot-date or raise input.future_tolerance_hours",
    "malformed_row": "check the file's quoting and delimiter",
}
TOP_VALUES = 5
EVENT_TYPES_SHOWN = 20


@dataclass
class LogQuality:
    """What ingest made of one log."""

    source: str
    path: str | None
    read: int
    accepted: int
    reasons: dict[str, int] = field(default_factory=dict)
    # Per reason, its most frequent offending values (or column names, for reasons about ids).
    top_values: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    stopped_by: str | None = None  # the gate's message when this log stopped the run
    # Once written: accepted rows new to the log's table (a cumulative dump repeats the others), and rows of
    # a full-state log that it no longer holds (input.full_state).
    added: int | None = None
    removed: int | None = None

    @property
    def quarantined(self) -> int:
        return self.read - self.accepted

    def share(self, rows: int) -> float:
        return rows / self.read if self.read else 0.0

    def to_dict(self) -> dict:
        return {"path": self.path, "read": self.read, "accepted": self.accepted, "quarantined": self.quarantined,
                "quarantined_share": round(self.share(self.quarantined), 6),
                "reasons": dict(sorted(self.reasons.items(), key=lambda kv: -kv[1])),
                "top_values": {r: [{"value": v, "rows": n} for v, n in values]
                               for r, values in self.top_values.items()},
                "gate": "stopped" if self.stopped_by else "passed", "gate_message": self.stopped_by,
                "added": self.added, "removed": self.removed}


def _percent(share: float) -> str:
    return f"{share * 100:.3g} %"


def _reason_text(log: LogQuality, reason: str) -> str:
    values = ", ".join(v for v, _ in log.top_values.get(reason, [])[:3])
    return f"{reason} (values: {values})" if values else reason


def gate_message(log: LogQuality, max_share: float, max_reason_share: dict[str, float]) -> str | None:
    """One line saying why ``log`` stops the run, or None when it passes both ceilings."""
    where = log.path or log.source
    ranked = sorted(log.reasons.items(), key=lambda kv: -kv[1])
    for reason, rows in ranked:
        limit = max_reason_share.get(reason)
        if limit is not None and log.share(rows) > limit:
            fix = f"{_FIXES[reason]} or " if reason in _FIXES else ""
            return (f"{where}: {rows:,} of {log.read:,} rows ({_percent(log.share(rows))}) quarantined as "
                    f"{_reason_text(log, reason)}, above input.max_reason_share.{reason} ({_percent(limit)}); "
                    f"{fix}raise input.max_reason_share.{reason}")
    if log.share(log.quarantined) > max_share:
        named = ", ".join(f"{_reason_text(log, r)}: {n:,}" if len(ranked) > 1 else _reason_text(log, r)
                          for r, n in ranked[:3])
        fixes = [_FIXES[r] for r, _ in ranked[:3] if r in _FIXES]
        fix = f"{'; '.join(fixes)} or " if fixes else ""
        return (f"{where}: {log.quarantined:,} of {log.read:,} rows ({_percent(log.share(log.quarantined))}) "
                f"quarantined as {named}; {fix}raise input.max_quarantined_share ({_percent(max_share)})")
    return None


@dataclass
class QualityReport:
    """The data-quality report of one ingest run (logged to MLflow as ``data_quality.json``)."""

    snapshot_date: dt.date
    ingest_id: str
    max_quarantined_share: float
    max_reason_share: dict[str, float]
    logs: dict[str, LogQuality] = field(default_factory=dict)
    users: int = 0
    users_without_behaviour: int = 0
    # Accepted behaviour rows per event type (the most common EVENT_TYPES_SHOWN): a type new to the
    # platform's logs shows up here, since no list rejects it by default.
    event_types: dict[str, int] = field(default_factory=dict)

    @property
    def stopped(self) -> list[LogQuality]:
        return [log for log in self.logs.values() if log.stopped_by]

    def apply_gates(self) -> None:
        for log in self.logs.values():
            log.stopped_by = gate_message(log, self.max_quarantined_share, self.max_reason_share)

    def to_dict(self) -> dict:
        return {
            "snapshot_date": str(self.snapshot_date), "ingest_id": self.ingest_id,
            "decision": "stopped" if self.stopped else "passed",
            "gates": {"max_quarantined_share": self.max_quarantined_share,
                      "max_reason_share": self.max_reason_share},
            "logs": {s: log.to_dict() for s, log in self.logs.items()},
            "event_types": self.event_types,
            "users": self.users, "users_without_behaviour": self.users_without_behaviour,
            "users_without_behaviour_share": round(self.users_without_behaviour / self.users, 6) if self.users else 0.0,
        }

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {"users": self.users, "users_without_behaviour": self.users_without_behaviour,
                                 "gate_stopped": float(bool(self.stopped))}
        for source, log in self.logs.items():
            out.update({f"{source}_read": log.read, f"{source}_accepted": log.accepted,
                        f"{source}_quarantined": log.quarantined})
            out.update({f"{source}_quarantined_{reason}": n for reason, n in log.reasons.items()})
            out.update({f"{source}_{what}": n for what, n in (("added", log.added), ("removed", log.removed))
                        if n is not None})
        return out

    def lines(self) -> list[str]:
        """The report as a few lines for the console."""
        out = []
        for source, log in self.logs.items():
            why = ", ".join(f"{_reason_text(log, r)} {n:,}" for r, n in sorted(log.reasons.items(),
                                                                              key=lambda kv: -kv[1]))
            out.append(f"{source}: read {log.read:,} = accepted {log.accepted:,} + quarantined {log.quarantined:,}"
                       + (f" ({why})" if why else "") + (" STOPPED" if log.stopped_by else ""))
        if self.event_types:
            out.append("behaviour event types: " + ", ".join(f"{t} {n:,}" for t, n in self.event_types.items()))
        share = self.users_without_behaviour / self.users if self.users else 0.0
        out.append(f"users: {self.users:,}, {_percent(share)} without behaviour")
        return out
