"""Every learned-chooser variant on a sweep's engine rows, cross-validated by fact: a table to choose one by.

Reads a sweep config (its ``data:``, ``ks``, ``ms``, ``output_dir``) and the ``facts.jsonl`` its sweep wrote (the
facts it holds so far: a sweep still running gives a table over its finished facts), builds at ``(--k, --m)`` the
candidates of ``RerankHead(rule=learned, demo_answers=...)`` exactly as the sweep's head does
(:meth:`selfens_pl.sweep.derive.Deriver.chooser_data`), and for each variant (feature set x model,
:mod:`selfens_pl.scoring.chooser`) chooses every fact by the chooser fit on the other folds
(:func:`selfens_pl.scoring.chooser_eval.cross_validated_choices`). No model is loaded.

Variants: the standard or rich features x logistic regression (C = 1, and C = 0.1) or boosted trees. Per variant:
accuracy; its gain over the current chooser (standard features, logistic: the sweep's
``rerank_learned_demos_cv``) and over origin, each with its paired bootstrap 95% interval; the accuracy of the half
of the facts it is most confident of (calibrated ``confidence``) and the mean confidence (calibration: close to
the accuracy); beside the mixture rule, origin and the candidate oracle (some candidate right).

    python scripts/chooser_variants.py studies/beat_the_control/sweep_webqa_fresh.yaml --k 1 --m 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from selfens_pl.commands import instantiate
from selfens_pl.commands.sweep import build_parser
from selfens_pl.heads import OriginHead, RerankHead
from selfens_pl.jsonl import read_objects, records_by_id
from selfens_pl.scoring.chooser import MODEL_TYPES, feature_set
from selfens_pl.scoring.chooser_eval import accuracy_at_coverage, cross_validated_choices
from selfens_pl.scoring.metrics import is_match
from selfens_pl.scoring.stats import paired_bootstrap
from selfens_pl.sweep.derive import Deriver
from selfens_pl.sweep.engine import Grid
from selfens_pl.sweep.runner import int_list


def sweep_groups(config: str):
    """``(cfg, grid, groups)`` as ``sweep --config config`` builds them (no model loaded)."""
    parser = build_parser()
    cfg = parser.parse_args(["--config", config])
    ms = int_list(cfg.ms, "--ms")
    cfg.data.demo_blocks = max(ms)
    data = instantiate(parser, cfg).data
    data.setup("predict")
    ks = int_list(cfg.ks, "--ks")
    grid = Grid(tuple(ks), tuple(ms))
    return cfg, grid, [dict(g, paraphrases=g["paraphrases"][:grid.k_max]) for g in data.groups]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", help="a sweep config whose sweep has written (some of) its facts.jsonl")
    ap.add_argument("--k", type=int, default=None, help="paraphrases (default: the largest of ks)")
    ap.add_argument("--m", type=int, default=None, help="few-shot blocks (default: the largest of ms)")
    ap.add_argument("--demo_answers", type=int, default=1, help="1: the demonstrations' answers are candidates")
    ap.add_argument("--output_dir", default=None, help="where the sweep wrote facts.jsonl (default: the config's)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    cfg, grid, groups = sweep_groups(args.config)
    k, m = args.k or grid.k_max, args.m or grid.m_max
    path = Path(args.output_dir or cfg.output_dir) / "facts.jsonl"
    facts = records_by_id(path, read_objects(path, tool="chooser_variants"))
    groups = [g for g in groups if g["id"] in facts]
    if len(groups) < 2 * args.folds:
        sys.exit(f"{path}: {len(groups)} facts so far; need at least {2 * args.folds}")
    derive = Deriver(facts, groups, grid, lambda p, a: is_match(p, a, bidirectional=cfg.bidirectional))
    demos = bool(args.demo_answers)
    standard = RerankHead(rule="learned", demo_answers=demos)
    rich = RerankHead(rule="learned", demo_answers=demos, chooser_features="rich")
    ids, items, feats, labels, _ = derive.chooser_data(standard, k, m)
    rich_feats = [rich.candidate_features(group, gens, cands, table, derive.lemmas) if cands else []
                  for group, gens, cands, table, _ in items]
    origin = derive.origin().per_fact()
    mixture = RerankHead("mixture", demo_answers=demos)
    fixed = {"origin": origin, mixture.label: derive.derived(mixture.label, mixture, k, m).per_fact()}
    variants = {}
    for name, rows in (("standard", feats), ("rich", rich_feats)):
        for model in MODEL_TYPES:
            variants[f"{name} + {model}"] = cross_validated_choices(
                ids, rows, labels, args.folds, feature_set(name, demos), model)
        # a stronger L2 (C = 0.1): the rich set has 4x the standard's features for the same few hundred facts
        variants[f"{name} + logistic, C=0.1"] = cross_validated_choices(
            ids, rows, labels, args.folds, feature_set(name, demos), "logistic", 0.1)
    current = variants["standard + logistic"].per_fact()

    def gain(own: dict, base: dict) -> str:
        return paired_bootstrap([own[i] for i in ids], [base[i] for i in ids], args.resamples, args.seed).format()

    print(f"{args.config}: {len(ids)} facts at K={k} M={m} (demo answers: {demos}), {args.folds} folds by fact\n")
    print("| variant | accuracy | vs current chooser | vs origin | acc. at 50% coverage | mean confidence |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, own in fixed.items():
        print(f"| {name} | {100 * sum(own[i] for i in ids) / len(ids):.1f} | {gain(own, current)} "
              f"| {gain(own, origin)} | | |")
    for name, choices in variants.items():
        own = choices.per_fact()
        half = accuracy_at_coverage(choices.right, choices.confidence, 0.5)
        known = [v for v in choices.confidence if v is not None]
        print(f"| {name} | {100 * choices.accuracy:.1f} | {gain(own, current)} | {gain(own, origin)} | "
              + ("–" if half is None else f"{100 * half:.1f}") + " | "
              + (f"{100 * sum(known) / len(known):.1f}" if known else "–") + " |")
    oracle = sum(any(lab) for lab in labels) / len(labels)
    print(f"| candidate oracle (some candidate right) | {100 * oracle:.1f} | | | | |")


if __name__ == "__main__":
    main()
