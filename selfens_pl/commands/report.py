"""Compare predict runs: one markdown table (and a bar chart) from their output directories.

    python -m selfens_pl report outputs/origin_webqa outputs/per_prompt_webqa outputs/avg_webqa   # ./report.md
    python -m selfens_pl report outputs/*_webqa --out docs/report.md --png docs/report.png

The report goes to ``--out``, by default ``report.md`` in the current directory, with its charts beside it
(``report.png``, ``report_coverage.png``).

Each directory is what ``predict`` (or ``sweep``) wrote (``summary.json`` + ``predictions.jsonl``). The table has one
row per run (method, model, n, accuracy, EM, F1, questions/s); a ``per_prompt`` run also gets the accuracy of each
paraphrase index and the oracle, the share of questions that at least one paraphrase answers correctly (an upper
bound for any rule that picks one paraphrase's answer).

Gains: every run's gain over origin and over the mean single paraphrase, each with a paired bootstrap 95% interval
over the facts both answered (``--resamples``, ``--seed``; :func:`gains_table`, :mod:`selfens_pl.scoring.gains`).
When the runs include control runs (:mod:`selfens_pl.heads.controls`: ``knn_prompt*``, ``copy_*``,
``self_consistency*``), a third column: each run's gain over the strongest of them, the most accurate control run
given (ties to the cheaper).

Accuracy against coverage: answer only the most confident x% of a run's records and score those. Confidence is
each record's ``mean_prob`` (``--confidence mean_prob``, the default: mean token probability of the answer; an
empty answer, ``None``, ranks last) or its ``agreement`` (``--confidence agreement``: share of paraphrases agreeing
with the answer, ties broken by ``mean_prob``). Records of equal confidence are taken together: inside such a
block the curve is the expected accuracy over their orders. The *area* is the mean of the curve over coverages
1/N, 2/N, ..., 1 (N records): the run's accuracy when confidence ranks nothing, higher when confident answers are
right more often. A second table gives the area and the accuracy at 10/25/50/75/100% coverage, and a second chart
(``--coverage_png``) draws the curves. A run whose records carry no such confidence (made before records had one,
or ``agreement`` not computed) gets "–", said in a note.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from selfens_pl.errors import UserError
from selfens_pl.figures import save_figure
from selfens_pl.jsonl import read_jsonl
from selfens_pl.lit.writer import PREDICTIONS, SUMMARY
from selfens_pl.heads.controls import is_control
from selfens_pl.scoring.gains import Baselines, gain_over, strongest
from selfens_pl.scoring.stats import per_fact
from selfens_pl.scoring.summaries import accuracy_by_paraphrase, oracle_accuracy

ORACLE_LABEL = "oracle (any paraphrase)"


@dataclass
class Run:
    """One output directory: its summary and, for per_prompt runs, accuracy by paraphrase index and the oracle."""

    path: Path
    summary: dict
    records: list[dict]
    per_paraphrase: dict[int, float] = field(default_factory=dict)  # index -> accuracy (0-1)
    per_paraphrase_n: dict[int, int] = field(default_factory=dict)
    oracle: float | None = None
    oracle_n: int = 0

    @property
    def method(self) -> str:
        return str(self.summary.get("method", "?"))


def load_run(directory: str | Path) -> Run:
    """Read one predict output directory; one clear error naming it when a file is missing or inconsistent."""
    path = Path(directory)
    if not path.is_dir():
        raise FileNotFoundError(f"report: {path}: no such output directory (run `python -m selfens_pl predict "
                                f"--output_dir {path} ...` first)")
    for name in (SUMMARY, PREDICTIONS):
        if not (path / name).is_file():
            raise FileNotFoundError(f"report: {path}: no {name} (an unfinished or failed predict run? rerun "
                                    f"`python -m selfens_pl predict --output_dir {path} ...`)")
    try:
        summary = json.loads((path / SUMMARY).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"report: {path / SUMMARY}: not valid JSON ({exc.msg})") from None
    if not isinstance(summary, dict) or "method" not in summary:
        raise UserError(f"report: {path / SUMMARY}: not a predict summary (no 'method')")
    records = read_jsonl(path / PREDICTIONS)
    expected = summary.get("records")
    if expected is not None and expected != len(records):
        raise UserError(f"report: {path}: {SUMMARY} counts {expected} records but {PREDICTIONS} holds "
                         f"{len(records)} (files from different runs?)")
    run = Run(path, summary, records)
    if run.method == "per_prompt":
        run.per_paraphrase, run.per_paraphrase_n = accuracy_by_paraphrase(records)
        run.oracle, run.oracle_n = oracle_accuracy(records)
    return run


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _score(value: float | None) -> str:
    """EM or F1 of a summary (a fraction in [0, 1]) as the table prints it, 0-100."""
    return "–" if value is None else f"{100 * value:.1f}"


def _num(value, digits: int = 1) -> str:
    return "–" if value is None else f"{float(value):.{digits}f}"


def run_labels(runs: list[Run]) -> list[str]:
    """The method, plus the directory name where two runs share a method."""
    methods = [r.method for r in runs]
    return [r.method if methods.count(r.method) == 1 else f"{r.method} ({r.path.name})" for r in runs]


def markdown_table(runs: list[Run]) -> str:
    """One row per run; a per_prompt run adds a row per paraphrase index and an oracle row beneath it."""
    header = ["run", "method", "model", "n", "accuracy", "EM", "F1", "questions/s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    for run in runs:
        s = run.summary
        lines.append("| " + " | ".join([
            run.path.name, run.method, str(s.get("model", "?")), str(s.get("n", "?")), _pct(s.get("accuracy")),
            _score(s.get("exact_match")), _score(s.get("f1")), _num(s.get("questions_per_s"), 2),
        ]) + " |")
        for index, acc in run.per_paraphrase.items():
            lines.append(f"| | per_prompt, paraphrase {index} | | {run.per_paraphrase_n[index]} | {_pct(acc)} "
                         "| | | |")
        if run.oracle is not None:
            lines.append(f"| | {ORACLE_LABEL} | | {run.oracle_n} | {_pct(run.oracle)} | | | |")
    return "\n".join(lines)


def render_markdown(runs: list[Run]) -> str:
    text = ["# selfens_pl report", "", markdown_table(runs), ""]
    text.append("accuracy: lemma match (%); EM and F1: SQuAD scores (0-100); n: questions (for a paraphrase row, "
                "its records). A per_prompt run's accuracy counts every paraphrase's answer; "
                f"'{ORACLE_LABEL}': share of questions that at least one paraphrase answers correctly.")
    text += ["", "runs: " + ", ".join(f"`{r.path}`" for r in runs), ""]
    text += paraphrase_section(runs)
    return "\n".join(text)


def paraphrase_section(runs: list[Run]) -> list[str]:
    """Markdown lines with the statistics of each groups file that ``paraphrase`` wrote and a run answered (its
    ``config.yaml``'s ``data.path``), over the ids the run answered: kept, mean per question, short groups,
    acceptance and rejections by check. Nothing for runs on other data."""
    import yaml

    from selfens_pl.scoring.paraphrase_checks import file_statistics, format_statistics

    lines, answered = [], {}  # (file, ids) -> names of the runs that answered those ids of that file
    for run in runs:
        config = run.path / "config.yaml"
        if not config.is_file():
            continue
        path = ((yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("data") or {}).get("path")
        if not isinstance(path, str) or not path.endswith(".jsonl"):
            continue
        if not Path(path).is_file():
            lines.append(f"- `{run.path.name}` answered `{path}`: file not found from here, no statistics")
            continue
        ids = frozenset(str(r["id"]) for r in run.records)
        answered.setdefault((path, ids), []).append(run.path.name)
    for (path, ids), names in answered.items():  # one line per file and id set, not per run
        stats = file_statistics(path, ids)
        if stats is None:  # not written by `paraphrase`
            continue
        lines.append(f"- {', '.join(f'`{n}`' for n in names)} answered `{path}` (paraphraser: "
                     f"{', '.join(stats['paraphrasers'])}): {format_statistics(stats)}")
    return ["## Paraphrases", "", *lines, ""] if lines else []


def draw_chart(runs: list[Run], out: str | Path, title: str = "accuracy per method") -> Path:
    """Bar chart of accuracy per run (a per_prompt run's oracle as a hatched extra bar), value on each bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, values, oracle = [], [], []
    for label, run in zip(run_labels(runs), runs):
        labels.append(label)
        values.append(run.summary.get("accuracy"))
        oracle.append(False)
        if run.oracle is not None:
            labels.append(f"{label}\n{ORACLE_LABEL}")
            values.append(run.oracle)
            oracle.append(True)
    heights = [100 * (v or 0.0) for v in values]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(labels) + 2.0), 4.8))
    colours = ["#dd8452" if o else "#4c72b0" for o in oracle]
    bars = ax.bar(range(len(labels)), heights, color=colours, edgecolor="black", width=0.6)
    for bar, is_oracle in zip(bars, oracle):
        if is_oracle:
            bar.set_hatch("//")
    for bar, value in zip(bars, values):
        ax.annotate("n/a" if value is None else f"{100 * value:.1f}%",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()), xytext=(0, 3),
                    textcoords="offset points", ha="center", va="bottom", fontsize=10)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, fontsize=9)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, max(heights + [10.0]) * 1.18)
    models = sorted({str(r.summary.get("model", "?")) for r in runs})
    ns = sorted({str(r.summary.get("n", "?")) for r in runs})
    ax.set_title(f"{title}\nmodel: {', '.join(models)}; n = {', '.join(ns)} questions")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return save_figure(fig, out)


COVERAGE_POINTS = (0.1, 0.25, 0.5, 0.75, 1.0)
#: Record fields that rank answers: the answer tokens' mean probability, the members' agreement, and a learned
#: chooser's calibrated probability that its choice is right (``RerankHead(rule: learned)``).
CONFIDENCES = ("mean_prob", "agreement", "confidence")


def coverage_curve(records: list[dict], confidence: str = "mean_prob") -> list[float] | None:
    """``[N]`` accuracy of the ``i + 1`` most confident scored records (ties: expected accuracy over their orders),
    or ``None`` when no record carries the confidence (or a record is not scored)."""
    if confidence not in CONFIDENCES:
        raise UserError(f"report: --confidence={confidence!r}: choose one of {', '.join(CONFIDENCES)}")
    if not records or any(r.get("correct") is None for r in records):
        return None
    if all(r.get(confidence) is None for r in records):
        return None

    def key(rec: dict) -> tuple[float, float]:
        value = rec.get(confidence)
        first = float("-inf") if value is None else float(value)
        second = rec.get("mean_prob") if confidence == "agreement" else None
        return first, float("-inf") if second is None else float(second)

    ordered = sorted(records, key=key, reverse=True)
    curve, correct, start = [], 0.0, 0
    while start < len(ordered):
        end = start
        while end < len(ordered) and key(ordered[end]) == key(ordered[start]):
            end += 1
        block = sum(bool(r["correct"]) for r in ordered[start:end]) / (end - start)
        for i in range(start, end):  # expected hits of the first (i - start + 1) records of the block
            curve.append((correct + block * (i - start + 1)) / (i + 1))
        correct += block * (end - start)
        start = end
    return curve


def coverage_area(curve: list[float]) -> float:
    """Mean accuracy over coverages 1/N .. 1: the area under the accuracy-coverage curve."""
    return sum(curve) / len(curve)


def accuracy_at(curve: list[float], coverage: float) -> float:
    """Accuracy of the most confident ``coverage`` share of the records (at least one record)."""
    return curve[max(1, round(coverage * len(curve))) - 1]


def coverage_table(runs: list[Run], curves: list[list[float] | None], confidence: str) -> str:
    """The area and the accuracy at each of :data:`COVERAGE_POINTS` per run (``curves``: each run's
    :func:`coverage_curve`, ``None`` for "–")."""
    header = ["run", "method", "confidence", "records", "area"] + [f"acc@{int(100 * c)}%" for c in COVERAGE_POINTS]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    for run, curve in zip(runs, curves):
        cells = ["–"] * (1 + len(COVERAGE_POINTS)) if curve is None else \
            [f"{100 * coverage_area(curve):.1f}"] + [_pct(accuracy_at(curve, c)) for c in COVERAGE_POINTS]
        lines.append("| " + " | ".join([run.path.name, run.method, confidence, str(len(run.records))] + cells) + " |")
    return "\n".join(lines)


def draw_coverage(runs: list[Run], curves: list[list[float] | None], out: str | Path, confidence: str) -> Path:
    """Accuracy against coverage, one line per run that has the confidence; the area in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.0, 5.0))
    for label, curve in zip(run_labels(runs), curves):
        if curve is None:
            continue
        xs = [100 * (i + 1) / len(curve) for i in range(len(curve))]
        ax.plot(xs, [100 * a for a in curve], label=f"{label} (area {100 * coverage_area(curve):.1f})")
    ax.set_xlabel(f"coverage (%): answer only the most confident records, by {confidence}")
    ax.set_ylabel("accuracy of the answered records (%)")
    ax.set_xlim(0, 100)
    ax.set_title("accuracy against coverage")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return save_figure(fig, out)


def _sweep_k(run: Run) -> int | None:
    """The K (paraphrases fused) a ``sweep`` run's summary gives; ``None`` for a predict run."""
    k = run.summary.get("k")
    return k if isinstance(k, int) and not isinstance(k, bool) and k >= 1 else None


def gains_table(runs: list[Run], resamples: int = 2000, seed: int = 0) -> tuple[str, str]:
    """Markdown table (and its note) of every run's gain over origin and over the mean single paraphrase, each with
    a paired bootstrap 95% interval over the facts both answered (:mod:`selfens_pl.scoring.gains`, as ``sweep.md``).
    Baselines come from the runs given: origin is a run of method ``origin``, else paraphrase 0 (standard block) of
    a ``per_prompt`` run; the mean single paraphrase is a ``per_prompt`` run's per-fact mean over its paraphrases
    with the standard block, over paraphrases ``< K`` for a run whose summary gives its ``k`` (a ``sweep`` run: the
    same baseline as ``sweep.md``). A missing baseline is "–", never guessed; so is a baseline with no fact in
    common with the run (runs on other data), said in the note. A gain over fewer facts than the run answered says
    ``(n=...)``."""
    per_prompt = next((r for r in runs if r.method == "per_prompt"), None)
    origin_run = next((r for r in runs if r.method == "origin"), None)
    baselines = Baselines(origin_run.records if origin_run else None, per_prompt.records if per_prompt else None)
    origin_name = f"origin (`{origin_run.path.name}`)" if origin_run else \
        f"origin (paraphrase 0 of `{per_prompt.path.name}`)" if per_prompt else "origin"
    problems: list[str] = []
    by_k = False  # a mean single paraphrase at some run's K

    def single_for(run: Run) -> dict[str, float] | None:
        nonlocal by_k
        k = _sweep_k(run)
        if per_prompt is None:
            return None
        single = baselines.single(k)
        if single is None:
            problems.append(f"`{run.path.name}` fused K={k} paraphrases, `{per_prompt.path.name}` answered "
                            f"{baselines.answered}: no mean single paraphrase at its K")
        by_k = by_k or (single is not None and k is not None)
        return single

    # the strongest control: the most accurate of the control runs given (cheapest first: ties to the cheaper)
    controls = sorted((r for r in runs if is_control(r.method)), key=lambda r: _cost(r, "decoded_rows"))
    best = strongest([(str(i), per_fact(r.records)) for i, r in enumerate(controls)])
    best_run = controls[int(best[0])] if best else None
    header = ["run", "method", "n", "accuracy", "vs origin", "vs mean single paraphrase"] + \
        (["vs strongest control"] if best else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    for run, label in zip(runs, run_labels(runs)):
        if run.method == "per_prompt":
            continue
        own = per_fact(run.records)
        if not own:
            continue
        cells = []
        bases = [(baselines.origin, origin_name), (single_for(run), "the mean single paraphrase")]
        if best_run is not None:
            bases.append((best[1], f"`{best_run.path.name}`"))
        for base, name in bases:
            if base is None:
                cells.append("–")
                continue
            if run is best_run and base is best[1]:
                cells.append("strongest")
                continue
            try:
                gain, n = gain_over(own, base, resamples, seed, (f"`{run.path.name}`", name))
            except UserError as exc:  # runs on other data: said, not fatal
                problems.append(str(exc))
                cells.append("–")
                continue
            cells.append(gain.format() if n == len(own) else f"{gain.format()} (n={n})")
        lines.append("| " + " | ".join([run.path.name, label, str(len(own)), _pct(sum(own.values()) / len(own))]
                                       + cells) + " |")
    single_name = (f"the mean over the paraphrases of `{per_prompt.path.name}` (standard few-shot block"
                   + ("; over paraphrases < K for a run that gives its K" if by_k else "") + ")") if per_prompt \
        else "– (no per_prompt run given)"
    note = (f"Gains in points with paired bootstrap 95% intervals ({resamples:,} resamples of the facts both runs "
            f"answered, seed {seed}). Origin: " + (f"run `{origin_run.path.name}`" if origin_run else
                                                   f"paraphrase 0 of `{per_prompt.path.name}`" if per_prompt else
                                                   "– (no origin or per_prompt run given)")
            + f"; mean single paraphrase: {single_name}."
            + (f" Strongest control: `{best_run.path.name}`, the most accurate of the control runs given ("
               + ", ".join(f"`{r.path.name}`" for r in controls) + "; docs/methods.md, 'Controls')." if best else "")
            + "".join(f" '–': {p}." for p in problems))
    return "\n".join(lines), note


def _cost(run: Run, key: str) -> float:
    """A cost per question a sweep run's summary states (``decoded_rows``, ``prompt_tokens``), else infinity."""
    value = (run.summary.get("cost") or {}).get(key)
    return float("inf") if value is None else float(value)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m selfens_pl report", allow_abbrev=False,
        description="Compare predict runs: a markdown table and a bar chart from their output directories.")
    parser.add_argument("dirs", nargs="+", help="predict output directories (summary.json + predictions.jsonl)")
    parser.add_argument("--out", default="report.md",
                        help="markdown file to write (default: report.md in the current directory)")
    parser.add_argument("--png", default=None, help="bar chart to write (default: --out with the suffix .png)")
    parser.add_argument("--coverage_png", default=None,
                        help="accuracy-coverage chart to write (default: --out's name + _coverage.png)")
    parser.add_argument("--confidence", default="mean_prob", choices=CONFIDENCES,
                        help="record confidence that ranks answers for the coverage curve")
    parser.add_argument("--resamples", type=int, default=2000,
                        help="bootstrap resamples of the gains' intervals (claims use >= 1,000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    args = parser.parse_args(argv)
    if args.resamples < 1:
        raise UserError(f"--resamples must be >= 1, got {args.resamples}")
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    return args


def main(argv: list[str] | None = None) -> tuple[Path, Path]:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    runs = [load_run(d) for d in args.dirs]
    out = Path(args.out)
    png = Path(args.png) if args.png else out.with_suffix(".png")
    coverage_png = Path(args.coverage_png) if args.coverage_png else out.with_name(out.stem + "_coverage.png")
    curves = [coverage_curve(r.records, args.confidence) for r in runs]  # once per run: table, note and chart
    coverage = coverage_table(runs, curves, args.confidence)
    missing = [r.path.name for r, curve in zip(runs, curves) if curve is None]
    note = "" if not missing else (f"\n\n'–': no {args.confidence} on the records of {', '.join(missing)} (a run "
                                   "made before records carried it, agreement not computed, or unscored records).")
    gains, gains_note = gains_table(runs, args.resamples, args.seed)
    text = (render_markdown(runs) + f"\n## Gains\n\n{gains}\n\n{gains_note}\n"
            + f"\n## Accuracy against coverage\n\n{coverage}\n\narea: mean accuracy over coverages 1/N .. 1 (%); "
            f"acc@x%: accuracy of the most confident x% of the records.{note}\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    draw_chart(runs, png)
    draw_coverage(runs, curves, coverage_png, args.confidence)
    print(markdown_table(runs))
    print()
    print(gains + "\n" + gains_note)
    print()
    print(coverage + note)
    print(f"wrote {out}, {png} and {coverage_png}")
    return out, png


if __name__ == "__main__":
    main()
