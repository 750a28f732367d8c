"""No silent choices: what a run does that a researcher must know to trust its numbers, as plain
lines for the console (at the start of a run) and for the results folder (``summary.md``).

- the data: every column of the file the loader did not take as a feature as it stands (dropped,
  or read as the label or a group), with the reason (``LoadReport.columns``), and bad rows dropped;
- the spec: methods that publish copies of real rows (``shareRealRows``), and settings that
  differ from the paper (README, "Defaults and the paper").
"""

from __future__ import annotations

from p2p_job.datasets import LoadReport
from p2p_job.spec import P2PExperiment, resolved_method_name


def data_notes(report: LoadReport) -> list[str]:
    """One line per column the loader did not take as a feature, and the rows it dropped."""
    lines = [f"column {column!r}: {action} — {reason}" for column, action, reason in report.columns]
    if report.rows_dropped:
        lines.append(f"{report.rows_dropped} bad row(s) of {report.rows_read} dropped (dataset.dropBadRows); first: {report.problems[0]}")
    return lines


def spec_notes(exp: P2PExperiment) -> list[str]:
    """Warnings about the spec's choices: real rows published to neighbours."""
    rule = exp.spec.aggregation.rule
    return [
        f"WARNING: method {resolved_method_name(m, rule)!r} publishes exact copies of real training rows to its "
        "neighbours (random-over with share: true, allowed by shareRealRows: true)"
        for m in exp.spec.methods
        if m.share_real_rows
    ]
