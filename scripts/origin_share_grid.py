"""The derived heads (the vote and RerankHead's fixed rules) at several ``origin_share`` values, from a sweep's engine
rows: each cell's gain over origin with its paired bootstrap 95% interval, a markdown table per ``(K, M)``.

How the default share for generated paraphrases (``selfens_pl/data/origin_share.py``, ``GENERATED_SHARE``) was
chosen: this table on development slices, then the sweep on a slice nobody had looked at (README). Each cell is the
head's own decision (``RerankHead(rule, origin_share=s).decide`` / ``VoteHead(s).decide`` through
:class:`~selfens_pl.sweep.derive.Deriver`), so it equals the sweep's ``_origin{s}`` run (a number weighs every group;
on a file of generated paraphrases the column at the default share is the default runs). Takes the sweep's flags and
reads the engine rows a sweep with them wrote under ``--output_dir`` (:func:`engine_rows`); it decodes nothing.

    python scripts/origin_share_grid.py --config studies/webqa_slices/sweep_webqa_confirm.yaml \\
        --data.path outputs/paraphrases/webquestions-train-2300-2799.jsonl --output_dir outputs/sweep_webqa_fifth \\
        --shares 0.5,0.7,0.9
"""

from __future__ import annotations

import json
import sys

from selfens_pl.commands.sweep import build_parser, prepare
from selfens_pl.data.origin_share import check_origin_share
from selfens_pl.heads import RerankHead, VoteHead
from selfens_pl.scoring.stats import paired_bootstrap
from selfens_pl.sweep.derive import Deriver
from selfens_pl.sweep.facts import FactsFile

RULES = ("mixture", "max", "vote")


def heads_at(share: float | None) -> list[tuple[str, object]]:
    """``(row name, head)`` of every derived head at ``share`` (None: every member equal)."""
    return [("vote", VoteHead(share))] + [(f"rerank_{rule}", RerankHead(rule, origin_share=share)) for rule in RULES]


def engine_rows(sweep) -> dict[str, dict]:
    """The rows of ``sweep``'s ``facts.jsonl`` if they answer its facts at its grid with rescoring tables, whatever
    fused rules they hold: the derived heads read only the members' answers and the tables, which no share changes.
    Otherwise one error: run the sweep first."""
    path = sweep.out / "facts.jsonl"
    try:
        old = json.loads((sweep.out / "facts.settings.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise SystemExit(f"{sweep.out}: no readable facts.settings.json; run the sweep first") from None
    same = all(old.get(key) == json.loads(json.dumps(value)) for key, value in sweep.base.items())
    covers = set(sweep.grid.ks) <= set(old.get("ks", ())) and set(sweep.grid.ms) <= set(old.get("ms", ()))
    if not (same and covers and old.get("rescore")):
        raise SystemExit(f"{path}: written for other facts, settings or (K, M), or without rescoring; run the sweep "
                         "with these flags first")
    rows = FactsFile(sweep.out, old).load()  # the sweep's own reading of its rows (the JSONL policy included)
    missing = [g["id"] for g in sweep.groups if g["id"] not in rows]
    if missing:
        raise SystemExit(f"{path}: {len(missing)} facts not answered yet (first {missing[0]!r}); finish the sweep")
    return rows


def deriver(sweep) -> Deriver:
    """The derived runs of ``sweep``'s engine rows (:func:`engine_rows`)."""
    return Deriver(engine_rows(sweep), sweep.groups, sweep.grid, sweep.is_match)


def grid_runs(derive: Deriver, shares: list[float], k: int, m: int) -> dict[str, list]:
    """``{head name: [its Run at each of shares]}`` at ``(k, m)``: each head's own decisions on the engine rows."""
    runs: dict[str, list] = {}
    for share in shares:
        for name, head in heads_at(share):
            runs.setdefault(name, []).append(derive.derived(name, head, k, m))
    return runs


def main(argv: list[str] | None = None) -> str:
    argv = list(sys.argv[1:] if argv is None else argv)
    shares = [0.5, 0.6, 0.7, 0.8, 0.9]
    if "--shares" in argv:
        at = argv.index("--shares")
        try:
            shares = [float(x) for x in argv[at + 1].split(",")]
        except (IndexError, ValueError):
            raise SystemExit("--shares: give shares separated by commas, e.g. 0.5,0.7,0.9") from None
        for share in shares:
            check_origin_share(share, "--shares")  # each strictly between 0 and 1, or one error naming the flag
        del argv[at:at + 2]
    _, _, _, sweep = prepare(build_parser(), argv)
    derive = deriver(sweep)
    origin = derive.origin().per_fact()
    ids = sorted(origin)
    lines = []
    for k, m in sweep.grid.configs():
        if k == 1:
            continue  # one paraphrase: nothing to share
        lines += ["", f"K={k} M={m}, {len(ids)} facts, origin {100 * sum(origin.values()) / len(ids):.1f}%: gain "
                  "over origin [paired 95% interval]", "",
                  "| head | " + " | ".join(f"share {s:g}" for s in shares) + " |",
                  "| --- |" + " --- |" * len(shares)]
        for name, runs in grid_runs(derive, shares, k, m).items():
            gains = [paired_bootstrap([own[i] for i in ids], [origin[i] for i in ids]).format()
                     for own in (run.per_fact() for run in runs)]
            lines.append(f"| {name} | " + " | ".join(gains) + " |")
    text = "\n".join(lines).lstrip("\n")
    print(text)
    return text


if __name__ == "__main__":
    main()
