"""``edgebench results-doc``: a run's dated results page and the README's headline table, generated.

Figures in the docs are never typed: ``docs/results/<date>-<run>.md`` is written from the run's
``bench/report.json`` and its training record (``metrics.json``, or the provenance of the packed model in
``models/<run>/`` when the model was rebuilt rather than trained here), and the README's table between
``BEGIN`` and ``END`` is replaced by the headline columns of the same report.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from edgebench import cpu
from edgebench.bench.markdown import COLUMNS, md_table, speedups, status_text, table_row
from edgebench.bench.report import BenchReport, all_rows
from edgebench.errors import EdgebenchError
from edgebench.fileio import read_json, write_text

BEGIN = "<!-- edgebench:results begin -->"
END = "<!-- edgebench:results end -->"
HEADLINE = ("Format", "Runtime", "Precision", "Size (MB)", "Top-1 % (95% CI)", "Drop (pp)",
            "p50 / p90 / p99 ms (threads)", "Best img/s (batch, threads)", "Status")  # fmt: skip


def training_record(run_dir: Path, pack_dir: Path | None) -> tuple[dict | None, str]:
    """(what trained the model, where it was read): the run's metrics.json, else the pack's provenance.

    Fields metrics.json lacks (a run older than its code-commit record) come from the pack's provenance.
    A metrics.json from another training than the pack's (``created`` is not the provenance's ``trained``:
    the run folder trained one model, then ``fetch-model`` rebuilt a newer pack into it) is not read.
    """
    packed = None
    if pack_dir and (pack_dir / "MANIFEST.json").is_file():
        packed = read_json(pack_dir / "MANIFEST.json", "packed model manifest")["provenance"]
    m = (
        read_json(run_dir / "metrics.json", "training metrics")
        if (run_dir / "metrics.json").is_file()
        else None
    )
    if m and packed and None not in (m.get("created"), packed.get("trained")):
        m = m if m["created"] == packed["trained"] else None
    if m:
        budget = m.get("budget") or {}
        record = {
            "preset": m.get("preset"),
            "test_images": m.get("test_images"),
            "test_accuracy": m.get("test_accuracy"),
            "minutes": round(m.get("wall_time_s", 0) / 60, 1),
            "phase_minutes": budget.get("phase_minutes"),
            "plan": budget.get("plan") or {},
            "cpu": m.get("cpu"),
            "code_commit": m.get("code_commit"),
        }
        for key, value in (packed or {}).items():
            if record.get(key) is None and key in record:
                record[key] = value
        return record, str(run_dir / "metrics.json")
    if packed:
        return packed, str(pack_dir)
    return None, ""


def headline(report: dict) -> str:
    """The README's table: the headline columns of the report's summary table, and the CPU it ran on."""
    env, index = report["environment"], [COLUMNS.index(c) for c in HEADLINE]
    rows = [[r[i] for i in index] for r in (table_row(x) for x in all_rows(report))]
    gate = "passed" if report["gate"]["passed"] else "FAILED"
    return "\n".join(
        [
            md_table(HEADLINE, rows),
            "",
            f"{report['dataset']['images']:,} test images; gate {gate} (max drop "
            f"{report['settings']['max_drop_pp']:g} pp). CPU: {cpu.summary(env['cpu_features'])}; "
            f"{env['logical_cores']} cores; {report['created'][:10]}.",
        ]
    )


def _training_section(record: dict | None, source: str) -> list[str]:
    if record is None:
        return [
            "## Training",
            "",
            "No training record beside the run (no metrics.json, no packed model).",
            "",
        ]
    acc = record.get("test_accuracy") or {}
    minutes = record.get("phase_minutes") or {}
    rows = [[k, f"{v * 100:.2f}%", f"{minutes[k]:.1f}" if k in minutes else "–"] for k, v in acc.items()]
    plan = record.get("plan") or {}
    commit = record.get("code_commit") or "unknown"
    lines = [
        "## Training",
        "",
        f"From `{source}`: preset `{record.get('preset')}`, {record.get('minutes')} min in all, "
        f"code commit `{commit}`.",
    ]
    earlier = record.get("continues")
    if earlier:
        before = earlier.get("provenance")
        before = before if isinstance(before, dict) else {}
        lines.append(
            f"It continued `{earlier.get('init_from')}` (weights sha256 "
            f"`{earlier.get('weights_sha256', '')[:16]}`"
            + (f", preset `{before.get('preset')}`, {before.get('minutes')} min" if before else "")
            + f"): {record.get('total_minutes', '?')} min of training in all."
        )
    if record.get("cpu"):
        lines.append(f"Trained on: {cpu.summary(record['cpu'])}.")
    if plan.get("mode"):
        lines.append(
            f"Plan: {plan.get('image_size')} px, {plan.get('unfreeze')} unfrozen, {plan.get('mode')}"
            + (f" ({plan['copies']} copies)" if plan.get("copies") else "")
            + f", {plan.get('epochs')} epoch(s) estimated."
        )
    test_images = record.get("test_images")
    return [*lines, "", md_table(["Stage", f"Test accuracy ({test_images} images)", "Minutes"], rows), ""]


def results_page(run_name: str, report: dict, record: dict | None, source: str) -> str:
    env = report["environment"]
    lines = [
        f"# Results: `{run_name}`, {report['created'][:10]}",
        "",
        f"Generated by `edgebench results-doc` from `runs/{run_name}/bench/report.json`: not typed.",
        "",
        f"**CPU: {cpu.summary(env['cpu_features'])}**, {env['logical_cores']} logical cores, "
        f"{env['memory_gb']} GB; edgebench commit `{env['edgebench']['commit'] or 'unknown'}`"
        + (" (uncommitted changes)" if env["edgebench"]["dirty"] else "")
        + ".",
        "",
        *_training_section(record, source),
        "## Artifacts",
        "",
        headline(report),
        "",
    ]
    ratios = speedups(report)
    if ratios:
        header = ["Format", "vs", "batch-1 p50 speed-up", "best img/s ratio"]
        lines += ["## Speed-up over the fp32 artifact of the same runtime", "", md_table(header, ratios), ""]
    failed = [r for r in report["artifacts"] if r["status"] not in ("pass", "reference")]
    if failed:
        lines += ["## Not passed", "", *[f"- {r['format']}: {status_text(r)}" for r in failed], ""]
    return "\n".join(lines)


def replace_block(readme_text: str, block: str, readme: Path) -> str:
    if readme_text.count(BEGIN) != 1 or readme_text.count(END) != 1:
        raise EdgebenchError(f"{readme} needs exactly one '{BEGIN}' and one '{END}' line")
    head, rest = readme_text.split(BEGIN)
    _, tail = rest.split(END)
    if not head.endswith("\n") or not tail.startswith("\n"):
        raise EdgebenchError(f"the results markers in {readme} must stand on lines of their own")
    return f"{head}{BEGIN}\n{block}\n{END}{tail}"


def write_results(
    run_dir: str | os.PathLike,
    docs_dir: str | os.PathLike,
    readme: str | os.PathLike | None = None,
    pack_dir: str | os.PathLike | None = None,
) -> Path:
    """Write ``<docs_dir>/<date>-<run>.md`` and, with ``readme``, its headline table; the page's path."""
    run_dir = Path(run_dir)
    report = BenchReport.read(run_dir / "bench" / "report.json").to_dict()
    record, source = training_record(run_dir, Path(pack_dir) if pack_dir else None)
    page = Path(docs_dir) / f"{report['created'][:10]}-{run_dir.name}.md"
    if readme is not None:
        readme = Path(readme)
        if not readme.is_file():
            raise EdgebenchError(f"README not found: {readme}")
        block = headline(report) + f" Full results: [{page.name}]({os.path.relpath(page, readme.parent)})."
        text = replace_block(readme.read_text(encoding="utf-8"), block, readme)
    write_text(page, results_page(run_dir.name, report, record, source))
    if readme is not None:
        write_text(readme, text)
    return page


@click.command("results-doc")
@click.option(
    "--run", "run_dir", required=True, type=click.Path(path_type=Path), help="run folder (bench/ inside)"
)
@click.option(
    "--docs", "docs_dir", default="docs/results", show_default=True, type=click.Path(path_type=Path)
)
@click.option(
    "--readme", default=None, type=click.Path(path_type=Path), help="also replace its results block"
)
@click.option(
    "--pack",
    "pack_dir",
    default=None,
    type=click.Path(path_type=Path),
    help="packed model whose provenance stands in for a missing metrics.json [models/<run>]",
)
def results_doc(run_dir, docs_dir, readme, pack_dir):
    """Write the dated results page of a benched run (and the README's headline table) from its reports."""
    pack_dir = pack_dir or Path("models") / Path(run_dir).name
    page = write_results(run_dir, docs_dir, readme, pack_dir)
    click.echo(f"wrote {page}" + (f" and the results table of {readme}" if readme else ""))
