"""``python -m selfens_pl chooser``: fit the learned chooser (:mod:`selfens_pl.scoring.chooser`) on grouped facts.

    python -m selfens_pl chooser --config studies/myriadlama_sweep/chooser_myriadlama.yaml --out chooser.json

It takes the sweep's flags (``--data.*``, ``--ks``, ``--ms``, ``--output_dir``, ...): the facts are answered and
scored by the sweep's one engine pass (``facts.jsonl`` in ``--output_dir``, reused when a sweep with the same
settings already wrote it), every member's answer of every fact at ``(--k, --m)`` becomes a candidate (with
``--first_tokens k`` also its answers from its 2nd .. k-th most likely first token; with ``--demo_answers true`` also
the answers of the demonstrations of its extra blocks), and the chooser is fit on all
of them (``--chooser_features standard|rich``, ``--model_type logistic|boosting``: :mod:`selfens_pl.scoring.chooser`;
calibrated on folds of the same facts) and written to ``--out`` for ``RerankHead(rule="learned", chooser=<file>)``, with the layout it was fit at
(``--k`` paraphrases x ``--m`` blocks: a head with the file refuses other member sets, and ``sweep`` reports it at
that configuration only) and the model it was fit with (a head with the file refuses another model). It also
prints the chooser's accuracy cross-validated over the same facts (``--chooser_folds`` folds by fact: no fact is
scored by a chooser fit on it) beside origin and the mixture rule, each gain with its paired bootstrap interval, and
the accuracy of the half of the facts its calibrated confidence ranks highest.
"""

from __future__ import annotations

import os
from pathlib import Path

import selfens_pl.stopping as stopping
from selfens_pl.commands.sweep import build_parser as sweep_parser
from selfens_pl.commands.sweep import prepare
from selfens_pl.errors import UserError
from selfens_pl.heads import OriginHead, RerankHead
from selfens_pl.scoring.chooser import DEFAULT_MODEL, FEATURE_SETS, MODEL_TYPES, FitModel, fit_chooser
from selfens_pl.scoring.chooser_eval import accuracy_at_coverage, cross_validated_choices
from selfens_pl.scoring.stats import paired_bootstrap
from selfens_pl.sweep.derive import Deriver


def build_parser():
    p = sweep_parser()
    p.prog = "python -m selfens_pl chooser"
    p.description = "Fit the learned chooser of RerankHead(rule=learned) on grouped facts with answers."
    p.add_argument("--k", type=int, default=3, help="Paraphrases per member set the chooser is fit for")
    p.add_argument("--m", type=int, default=3, help="Few-shot blocks per member set the chooser is fit for")
    p.add_argument("--first_tokens", type=int, default=1,
                   help="Wider candidates: each member's answers from its 2nd .. k-th most likely first token join "
                        "the candidates (as RerankHead(first_tokens=k); use the same k with the file)")
    p.add_argument("--demo_answers", type=bool, default=False,
                   help="The demonstrations' answers join the candidates (as RerankHead(demo_answers=true); use the "
                        "same setting with the file)")
    p.add_argument("--chooser_features", type=str, default="standard",
                   help=f"The chooser's features: {' or '.join(FEATURE_SETS)} (as RerankHead(chooser_features=...))")
    p.add_argument("--model_type", type=str, default=None,
                   help=f"{' or '.join(MODEL_TYPES)}; default: {DEFAULT_MODEL} by --chooser_features")
    p.add_argument("--C", type=float, default=1.0, help="Inverse L2 strength of the logistic regression")
    p.add_argument("--out", type=str, default="chooser.json", help="Where the chooser file goes")
    return p


def model_flag(cfg) -> str:
    """The model as the flags named it (``--model`` or ``--model.model``)."""
    model = cfg.model
    return model if isinstance(model, str) else model.model


def check_flags(cfg) -> None:
    """The chooser's own flags, before the groups are read and the model loads: ``--first_tokens``, ``--k`` /
    ``--m``, and an ``--out`` that can be written (the engine pass would otherwise run first)."""
    if cfg.chooser_features not in FEATURE_SETS:
        raise UserError(f"--chooser_features={cfg.chooser_features!r}: choose one of {', '.join(FEATURE_SETS)}")
    if cfg.model_type is not None and cfg.model_type not in MODEL_TYPES:
        raise UserError(f"--model_type={cfg.model_type!r}: choose one of {', '.join(MODEL_TYPES)}")
    if cfg.first_tokens < 1:
        raise UserError(f"--first_tokens={cfg.first_tokens}: give 1 (the members' greedy answers) or more")
    for flag, value in (("--k", cfg.k), ("--m", cfg.m)):
        if value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    check_writable_file(cfg.out, "--out")


def check_writable_file(path, flag: str) -> None:
    """A file can be written at ``path``: not a directory, and its folder is (or can be made as) a directory that
    this process may write in. Nothing is made here."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag}={path}: is a directory; give a file name (e.g. {path / 'chooser.json'})")
    folder = next((p for p in path.parents if p.exists()), None)
    if folder is not None and not folder.is_dir():
        raise UserError(f"{flag}={path}: cannot write it ({folder} is a file, not a directory)")
    if folder is not None and not os.access(folder, os.W_OK):  # the file is written through a temporary one there
        raise UserError(f"{flag}={path}: cannot write it (no permission to write in {folder})")


def main(argv: list[str] | None = None) -> Path:
    cfg, _, _, sweep = prepare(build_parser(), argv, check_flags)
    if (cfg.k, cfg.m) not in sweep.grid.configs():
        raise UserError(f"--k {cfg.k} --m {cfg.m}: not among the swept configurations (--ks {list(sweep.grid.ks)}, "
                        f"--ms {list(sweep.grid.ms)})")
    head = RerankHead(rule="learned", first_tokens=cfg.first_tokens, demo_answers=cfg.demo_answers,
                      chooser_features=cfg.chooser_features)
    model_type = cfg.model_type or DEFAULT_MODEL[cfg.chooser_features]
    stopping.resumable(str(sweep.out))  # facts.jsonl is reused by the same command
    with stopping.after_batch():  # SIGTERM / SIGINT: once the batch of facts in flight is in facts.jsonl
        facts, _ = sweep.engine([], True, cfg.first_tokens, cfg.demo_answers)
    derive = Deriver(facts, sweep.groups, sweep.grid, sweep.is_match)
    data = derive.chooser_data(head, cfg.k, cfg.m)
    ids, _, feats, labels, _ = data
    kept = [g for g in range(len(feats)) if feats[g]]
    chooser = fit_chooser([feats[g] for g in kept], [labels[g] for g in kept], cfg.C, head.features, model_type)
    chooser.layout = (cfg.k, cfg.m)  # a head with the file answers member sets of this layout only
    chooser.fit_with = FitModel.of(model_flag(cfg), sweep.decoder.model)  # ... and with this model only
    out = chooser.save(cfg.out)
    mixture = RerankHead("mixture", first_tokens=cfg.first_tokens, demo_answers=cfg.demo_answers)
    runs = {"origin": derive.derived("origin", OriginHead(), 1, 1),
            mixture.label: derive.derived(mixture.label, mixture, cfg.k, cfg.m)}
    scores = {name: run.per_fact() for name, run in runs.items()}
    # the chooser's own choices, cross-validated with the model asked for (the sweep's head takes the default)
    choices = cross_validated_choices(ids, feats, labels, cfg.chooser_folds, head.features, model_type, cfg.C)
    scores[f"{head.label} ({model_type})"] = choices.per_fact()
    ids = sorted(scores["origin"])
    oracle = sum(any(lab) for lab in labels) / len(labels)
    print(f"| method (K={cfg.k}, M={cfg.m}, {len(ids)} facts) | accuracy | vs origin | vs {mixture.label} |")
    print("| --- | --- | --- | --- |")
    for name, own in scores.items():
        vs = [paired_bootstrap([own[i] for i in ids], [scores[b][i] for i in ids], cfg.resamples, cfg.seed).format()
              for b in ("origin", mixture.label)]
        print(f"| {name} | {100 * sum(own.values()) / len(ids):.1f} | {vs[0]} | {vs[1]} |")
    print(f"| candidate oracle (any candidate right) | {100 * oracle:.1f} | | |")
    half = accuracy_at_coverage(choices.right, choices.confidence, 0.5)
    if half is not None:
        print(f"[chooser] cross-validated: {100 * half:.1f}% right on the half of the facts its confidence ranks "
              f"highest ({100 * choices.accuracy:.1f}% on all)")
    print(f"[chooser] fit on {len(kept)} facts ({sum(len(f) for f in feats)} candidates); wrote {out}")
    return out
