"""The sweep's tables, charts and ``sweep.json``: accuracy per (K, M), every gain with its paired bootstrap interval
and cost, and the cascades' accuracy against decoded rows."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from selfens_pl.figures import save_figure
from selfens_pl.scoring.gains import Baselines, gain_over, strongest
from selfens_pl.sweep.engine import config_name
from selfens_pl.sweep.runner import CANDIDATES, MEMBER, ORACLE, SINGLE, candidates_row


def config_label(k: int, m: int) -> str:
    return f"K={k} M={m}"


def accuracy_grid(runs, baselines: Baselines, configs: list[tuple[int, int]]) -> dict[str, dict[tuple, float]]:
    """``{method: {(k, m): accuracy}}``: the baselines (mean single paraphrase, mean single member, oracle, from
    the per_prompt run's records: :mod:`selfens_pl.scoring.gains`; origin) first, then every method in the order
    its runs came."""
    per_config = {SINGLE: lambda k, m: baselines.single(k), MEMBER: baselines.member, ORACLE: baselines.oracle}
    grid: dict[str, dict[tuple, float]] = {}
    for name, scores in per_config.items():
        if name == MEMBER and all(m == 1 for _, m in configs):
            continue
        grid[name] = {}
        for k, m in configs:
            facts = scores(k, m)
            grid[name][(k, m)] = sum(facts.values()) / len(facts)
    for run in runs:  # wider candidates: any of a rescoring run's candidates right (a cascade's are partial)
        wide, demos = run.extra.get("first_tokens", 1), run.extra.get("demo_answers", False)
        if (wide > 1 or demos) and "curve" not in run.extra and all("candidate_correct" in r for r in run.records):
            grid.setdefault(candidates_row(wide, demos), {})[(run.k, run.m)] = \
                sum(bool(r["candidate_correct"]) for r in run.records) / len(run.records)
    origin = next(r for r in runs if r.method == "origin")
    grid["origin"] = {c: origin.accuracy for c in configs}
    for run in runs:
        if run.method in ("origin", "per_prompt"):
            continue
        # a control that ignores K (run once per M) answers the same at every K
        for k in ({k for k, m in configs if m == run.m} if run.extra.get("ignores_k") else {run.k}):
            grid.setdefault(run.method, {})[(k, run.m)] = run.accuracy
    return grid


def controls_at(runs, k: int, m: int) -> list:
    """The control runs a run at ``(k, m)`` is compared with: those at the same ``M`` and the same ``K`` (a control
    that ignores K: at any K), the cheapest first (decoded rows, then prompt tokens)."""
    own = [r for r in runs if r.extra.get("control") and r.m == m and (r.k == k or r.extra.get("ignores_k"))]
    return sorted(own, key=lambda r: (r.rows, r.prompt_tokens))


def gains(runs, baselines: Baselines, resamples: int, seed: int) -> list[dict]:
    """Every run that is not origin by construction (``K x M >= 2``, or one member decoding more than one row: wider
    candidates), and origin: accuracy, gain over origin and over the mean single paraphrase at its K (standard
    prompt), each with a paired bootstrap interval over facts (``report``'s gains: :mod:`selfens_pl.scoring.gains`),
    and its cost per question. Every control is listed too (whatever its K x M). Where the sweep ran controls
    (:mod:`selfens_pl.heads.controls`), each row also has ``control``, the strongest control at its ``(K, M)``
    (:func:`controls_at`, :func:`~selfens_pl.scoring.gains.strongest`: the most accurate, ties to the cheaper), and
    ``vs_control``, the gain over it (``None`` for that control itself)."""
    out = []
    for run in runs:
        if run.method == "per_prompt" or (run.k * run.m < 2 and run.rows <= 1 and run.method != "origin"
                                          and not run.extra.get("control")):
            continue
        own, single = run.per_fact(), baselines.single(run.k)
        row = {"method": run.method, "k": run.k, "m": run.m, "accuracy": run.accuracy,
               "vs_origin": gain_over(own, baselines.origin, resamples, seed, (run.name, "origin"))[0],
               "vs_single": None if single is None else
               gain_over(own, single, resamples, seed, (run.name, SINGLE))[0],
               "rows": run.rows, "prompt_tokens": run.prompt_tokens, "scored_tokens": run.scored_tokens}
        best = strongest([(c.name, c.per_fact()) for c in controls_at(runs, run.k, run.m)])
        if best is not None:
            row["control"] = best[0]
            row["vs_control"] = None if best[0] == run.name else \
                gain_over(own, best[1], resamples, seed, (run.name, best[0]))[0]
        out.append(row)
    return sorted(out, key=lambda r: (r["m"], r["k"], -r["accuracy"], r["method"]))


def control_cell(row: dict) -> str:
    """A gains row's 'vs strongest control' cell."""
    if "control" not in row:
        return "–"
    return "strongest" if row["vs_control"] is None else f"{row['vs_control'].format()} ({row['control']})"


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def markdown(grid, gain_rows, cascades, configs, sweep, engine_seconds: float, total: float, cpu: float) -> str:
    head = ["method"] + [config_label(k, m) for k, m in configs]
    lines = ["## Accuracy (%)", "", "| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    for method, cells in grid.items():
        lines.append("| " + " | ".join([method] + [_pct(cells[c]) if c in cells else "–" for c in configs]) + " |")
    resamples = sweep.cfg.resamples
    controls = any("control" in r for r in gain_rows)
    lines += ["", f"## Gains (points) with paired bootstrap 95% intervals ({resamples:,} resamples of the facts, "
              f"seed {sweep.cfg.seed}) and cost per question", "",
              "| method | K | M | accuracy | vs origin | vs mean single paraphrase | "
              + ("vs strongest control | " if controls else "") + "decoded rows | prompt tokens | scored tokens |",
              "|" + " --- |" * (10 if controls else 9)]
    for r in gain_rows:
        scored = "" if r["scored_tokens"] is None else f"{r['scored_tokens']:.0f}"
        lines.append(f"| {r['method']} | {r['k']} | {r['m']} | {_pct(r['accuracy'])} | {r['vs_origin'].format()} | "
                     + ("–" if r["vs_single"] is None else r["vs_single"].format())
                     + (f" | {control_cell(r)}" if controls else "")
                     + f" | {r['rows']:.2f} | {r['prompt_tokens']:.0f} | {scored} |")
    if controls:
        lines += ["", "vs strongest control: the gain over the most accurate control (`knn_prompt*`, `copy_*`, "
                  "`self_consistency*`: docs/methods.md) at the run's K and M (a control that ignores K counts at "
                  "every K; ties to the cheaper), named in parentheses; 'strongest' marks that control's own row, "
                  "'–' a configuration without controls."]
    if cascades:
        lines += ["", "## Cascades: accuracy against decoded rows per question, over thresholds", ""]
        for (label, k, m), curve in cascades.items():
            lines.append(f"- `{label}` at K={k} M={m}: " + "; ".join(
                f"t={t:.2f}: {_pct(acc)}% at {rows:.2f} rows" for t, acc, rows in curve))
    n = len(sweep.groups)
    sizes = [len(g["paraphrases"]) for g in sweep.groups]
    if min(sizes) < sweep.grid.k_max:
        short = sum(s < sweep.grid.k_max for s in sizes)
        lines += ["", f"Groups of unequal size (`--short_groups use_all`): {short} of {n} have fewer than "
                  f"K = {sweep.grid.k_max} paraphrases (mean {sum(sizes) / n:.2f}, counting the original) and are "
                  "asked with all they have at a larger K; the rows column counts what each group decoded."]
    lines += ["", f"{n} facts, {sweep.cfg.model}, greedy, lemma-match accuracy. Origin: paraphrase 0 with the "
              f"standard few-shot block. Mean single paraphrase at (K, M): the mean accuracy of paraphrases < K each "
              f"asked alone with the standard block (the baseline of 'vs mean single paraphrase'); mean single "
              f"member: the same over all K x M members (the other blocks included); oracle: any member right "
              f"(any candidate, top k: any member's answer from one of its k most likely first tokens right; + demo "
              f"answers: or a demonstration's answer the group was asked with). "
              f"Cost per question: decoded rows (greedy streams), prompt tokens encoded (its members' questions "
              f"and the extra blocks' prefixes; the standard instruction + few-shot block is encoded once per batch "
              f"for all questions and not counted), continuation tokens fed for rescoring.",
              "", f"Engine pass (every member encoded once; answers, rescoring and the fused rules from it): "
              f"{engine_seconds / 60:.1f} min this run. Sweep wall time {total / 60:.1f} min; CPU time "
              f"{cpu / 60:.1f} min; {sweep.decoder.stats.tokens_fed:,} tokens fed through the model this run "
              "(facts and runs reused from disk count none)."]
    return "\n".join(lines) + "\n"


def draw_accuracy(grid, configs, ms: list[int], out: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ms), figsize=(6.0 * len(ms) + 2.5, 5.0), squeeze=False, sharey=True)
    markers = "osD^vP*Xh<>"
    for ax, m in zip(axes[0], ms):
        for i, (method, cells) in enumerate(grid.items()):
            points = sorted((k, v) for (k, mm), v in cells.items() if mm == m)
            if len({v for _, v in points}) == 1 and method == "origin":
                style = dict(color="black", linestyle="-.")
            elif method in (SINGLE, MEMBER, ORACLE) or method.startswith(CANDIDATES.split("{")[0]):
                style = dict(color="black" if method == SINGLE else "grey", linestyle="--" if method in (SINGLE, MEMBER)
                             else ":", marker="o" if method != ORACLE else "s")
            else:
                style = dict(marker=markers[i % len(markers)], alpha=0.9)
            ax.plot([k for k, _ in points], [100 * v for _, v in points], label=method, **style)
        ax.set_title(f"M = {m} few-shot block{'s' if m > 1 else ''}")
        ax.set_xlabel("K (paraphrases)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (%)")
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(title)
    return save_figure(fig, out)


def draw_cost(runs, cascades, origin: float, single: float, out: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.0, 5.5))
    methods: dict[str, list] = {}
    for run in runs:
        if run.method in ("per_prompt", "origin") or run.method.startswith("cascade"):
            continue
        if run.rows <= 0:  # a copy decodes nothing: a level, not a point on the log axis
            ax.axhline(100 * run.accuracy, color="grey", linestyle=":", label=f"{run.method} M={run.m} (0 rows)")
            continue
        methods.setdefault(run.method, []).append((run.rows, 100 * run.accuracy))
    for method, points in methods.items():
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", linestyle="", label=method, alpha=0.8)
    for (label, k, m), curve in cascades.items():
        ax.plot([c[2] for c in curve], [100 * c[1] for c in curve], marker=".", label=f"{label} (K={k} M={m})")
    ax.axhline(100 * origin, color="black", linestyle="-.", label="origin (1 row)")
    ax.axhline(100 * single, color="black", linestyle="--", label="mean single paraphrase")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("decoded rows per question (log scale)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return save_figure(fig, out)


def write_outputs(sweep, runs, baselines, engine_seconds: float, total: float, cpu: float) -> Path:
    configs = sweep.grid.configs()
    grid = accuracy_grid(runs, baselines, configs)
    rows = gains(runs, baselines, sweep.cfg.resamples, sweep.cfg.seed)
    cascades = {(r.method, r.k, r.m): r.extra["curve"] for r in runs if "curve" in r.extra}
    out, n = sweep.out, len(sweep.groups)
    table = markdown(grid, rows, cascades, configs, sweep, engine_seconds, total, cpu)
    (out / "sweep.md").write_text(f"# selfens_pl sweep\n\n{table}")
    title = f"model: {sweep.cfg.model}; n = {n} facts"
    draw_accuracy(grid, configs, list(sweep.grid.ms), out / "sweep.png", f"accuracy against K\n{title}")
    single = grid[SINGLE][(sweep.grid.k_max, 1)] if (sweep.grid.k_max, 1) in grid[SINGLE] else \
        next(iter(grid[SINGLE].values()))
    draw_cost(runs, cascades, grid["origin"][configs[0]], single, out / "sweep_cost.png",
              f"accuracy against cost\n{title}")
    (out / "sweep.json").write_text(json.dumps({
        "model": sweep.cfg.model, "n": n, "ks": list(sweep.grid.ks), "ms": list(sweep.grid.ms),
        "accuracy": {method: {config_name(*c): v for c, v in cells.items()} for method, cells in grid.items()},
        "gains": [dict(r, vs_origin=asdict(r["vs_origin"]),
                       vs_single=None if r["vs_single"] is None else asdict(r["vs_single"]),
                       **({"vs_control": None if r["vs_control"] is None else asdict(r["vs_control"])}
                          if "control" in r else {})) for r in rows],
        "cascades": {f"{label}_{config_name(k, m)}": curve for (label, k, m), curve in cascades.items()},
        "engine_seconds": round(engine_seconds, 1), "wall_seconds": round(total, 1), "cpu_seconds": round(cpu, 1),
        "tokens_fed": sweep.decoder.stats.tokens_fed}, indent=2) + "\n")
    print(table)
    print(f"[sweep] wrote {out / 'sweep.md'}, {out / 'sweep.png'}, {out / 'sweep_cost.png'} and "
          f"{out / 'sweep.json'} in {total / 60:.1f} min")
    return out
