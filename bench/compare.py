"""``edgebench compare OLD NEW``: per artifact, accuracy and latency changes with a verdict.

A change is a regression (or an improvement) only when the two reports' 95% intervals do not overlap: the
Wilson interval of top-1 accuracy, and the distribution-free interval of the batch-1 median latency (per
thread setting both reports measured). Overlapping intervals are "within noise" — a conservative rule, so a
regression verdict is hard to get by chance. An artifact that passed the gate before and does not now, or
that disappeared, is a regression too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgebench.bench.report import all_rows, load

REGRESSION, IMPROVEMENT, NOISE, NEW = "regression", "improvement", "within noise", "new"
_GOOD = {"pass", "reference"}


def interval_verdict(old: list[float], new: list[float], higher_is_better: bool) -> str:
    """Compare two intervals: disjoint and worse -> regression, disjoint and better -> improvement."""
    if new[1] < old[0]:
        return REGRESSION if higher_is_better else IMPROVEMENT
    if new[0] > old[1]:
        return IMPROVEMENT if higher_is_better else REGRESSION
    return NOISE


@dataclass
class Comparison:
    rows: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[str]:
        return [r["format"] for r in self.rows if r["verdict"] == REGRESSION]


def _latency_changes(old: dict, new: dict) -> list[dict]:
    old_by = {e["threads"]: e["batch1"] for e in old.get("latency") or []}
    out = []
    for e in new.get("latency") or []:
        before, after = old_by.get(e["threads"]), e["batch1"]
        if before is None:
            continue
        out.append(
            {
                "threads": e["threads"],
                "old_p50_ms": before["p50_ms"],
                "new_p50_ms": after["p50_ms"],
                "change_pct": (after["p50_ms"] / before["p50_ms"] - 1) * 100,
                "verdict": interval_verdict(
                    before["median_ci95_ms"], after["median_ci95_ms"], higher_is_better=False
                ),
            }
        )
    return out


def compare_rows(old: dict | None, new: dict | None) -> dict:
    name = (new or old)["format"]
    row = {
        "format": name,
        "old_status": old and old["status"],
        "new_status": new and new["status"],
        "accuracy": None,
        "latency": [],
        "verdict": NOISE,
        "notes": [],
    }
    if new is None:
        row["verdict"] = REGRESSION
        row["notes"].append("missing from the new report")
        return row
    if old is None:
        row["verdict"] = NEW
        return row
    verdicts = []
    if old["status"] in _GOOD and new["status"] not in _GOOD:
        verdicts.append(REGRESSION)
        row["notes"].append(f"status {old['status']} -> {new['status']}")
    elif old["status"] not in _GOOD and new["status"] in _GOOD:
        verdicts.append(IMPROVEMENT)
        row["notes"].append(f"status {old['status']} -> {new['status']}")
    if old.get("accuracy") and new.get("accuracy"):
        a, b = old["accuracy"], new["accuracy"]
        v = interval_verdict(a["ci95"], b["ci95"], higher_is_better=True)
        row["accuracy"] = {
            "old": a["top1"],
            "new": b["top1"],
            "change_pp": (b["top1"] - a["top1"]) * 100,
            "verdict": v,
        }
        verdicts.append(v)
    row["latency"] = _latency_changes(old, new)
    verdicts += [e["verdict"] for e in row["latency"]]
    if REGRESSION in verdicts:
        row["verdict"] = REGRESSION
    elif IMPROVEMENT in verdicts:
        row["verdict"] = IMPROVEMENT
    return row


def compare_reports(old: dict, new: dict) -> Comparison:
    result = Comparison()
    if old["environment"]["cpu"] != new["environment"]["cpu"]:
        result.warnings.append(
            f"reports come from different CPUs ({old['environment']['cpu']} vs "
            f"{new['environment']['cpu']}): latency changes compare machines, not models"
        )
    if (
        old["dataset"]["images"] != new["dataset"]["images"]
        or old["dataset"]["source"] != new["dataset"]["source"]
    ):
        result.warnings.append(
            f"test sets differ ({old['dataset']['images']} images of {old['dataset']['source']} "
            f"vs {new['dataset']['images']} of {new['dataset']['source']})"
        )
    old_rows = {r["format"]: r for r in all_rows(old)}
    new_rows = {r["format"]: r for r in all_rows(new)}
    for name in dict.fromkeys([*old_rows, *new_rows]):
        result.rows.append(compare_rows(old_rows.get(name), new_rows.get(name)))
    return result


def compare_files(old_path, new_path) -> Comparison:
    return compare_reports(load(old_path, "old report"), load(new_path, "new report"))


def markdown(result: Comparison) -> str:
    header = [
        "Format",
        "Status",
        "Top-1 old → new (pp)",
        "Accuracy",
        "p50 ms old → new (threads)",
        "Latency",
        "Verdict",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in result.rows:
        acc = r["accuracy"]
        acc_txt = f"{acc['old'] * 100:.2f} → {acc['new'] * 100:.2f} ({acc['change_pp']:+.2f})" if acc else "–"
        lat_txt = (
            "; ".join(
                f"{e['old_p50_ms']:.2f} → {e['new_p50_ms']:.2f} ({e['change_pct']:+.1f}%, "
                f"{'TF default' if e['threads'] is None else str(e['threads']) + 't'})"
                for e in r["latency"]
            )
            or "–"
        )
        lat_verdict = ", ".join(sorted({e["verdict"] for e in r["latency"]})) or "–"
        status = f"{r['old_status'] or '–'} → {r['new_status'] or '–'}"
        verdict = r["verdict"] + (f" ({'; '.join(r['notes'])})" if r["notes"] else "")
        lines.append(
            "| "
            + " | ".join(
                [r["format"], status, acc_txt, acc["verdict"] if acc else "–", lat_txt, lat_verdict, verdict]
            )
            + " |"
        )
    return "\n".join(lines)
