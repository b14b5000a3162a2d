"""``python -m selfens_pl sweep``: every method for K paraphrases x M few-shot blocks (:mod:`selfens_pl.sweep`).

    python -m selfens_pl sweep --config studies/myriadlama_sweep/sweep_myriadlama.yaml
    python -m selfens_pl sweep --config studies/myriadlama_sweep/sweep_myriadlama.yaml --ks 1,3 --ms 1 --data.limit 50
    python -m selfens_pl sweep --config studies/myriadlama_sweep/sweep_myriadlama.yaml --trainer.accelerator cuda \
        --trainer.precision bf16-true

The model, questions and device take predict's flags (``--model.*``, ``--data.*``, ``--trainer.accelerator``,
``--trainer.precision``: :mod:`selfens_pl.commands`); the old ``--model``, ``--max_new_tokens``, ``--stop`` and
``--device`` are still accepted on the command line (CHANGELOG.md).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Literal

import selfens_pl.stopping as stopping
from selfens_pl.commands import RENAMED, device_and_dtype, dtype_setting, instantiate, load_model, \
    model_and_data_parser, rename_flags
from selfens_pl.data.prompts import PromptTokenizer
from selfens_pl.engine.models import DEFAULT_MAX_NEW_TOKENS
from selfens_pl.errors import UserError
from selfens_pl.heads import FusionHead, VoteHead
from selfens_pl.heads.controls import check_selection
from selfens_pl.scoring.gains import Baselines
from selfens_pl.sweep.derive import Deriver
from selfens_pl.sweep.engine import Grid, fused_configs
from selfens_pl.sweep.report import write_outputs
from selfens_pl.sweep.plan import engine_needs, plan_for
from selfens_pl.sweep.runner import BUILT_IN, Sweep, int_list


def build_parser():
    parser = model_and_data_parser("sweep", "Every method for K paraphrases x M few-shot blocks: tables, charts, "
                                   "runs.", "The groups, exactly as predict's --data (batches: --batch_rows)",
                                   max_new_tokens=DEFAULT_MAX_NEW_TOKENS)
    parser.add_argument("--heads", type=list[FusionHead], default=[],
                        help="Heads to sweep (class_path + init_args each, as predict's --model.head); origin, "
                             "per_prompt, vote, the mean single paraphrase and the oracle are always there")
    parser.add_argument("--ks", type=str | list[int] | None, default=None,
                        help="The K's (paraphrases per group), e.g. 1,3,6 (default: 1 .. the smallest group; the "
                             "largest with --short_groups use_all)")
    parser.add_argument("--ms", type=str | list[int], default="1",
                        help="The M's (few-shot blocks per paraphrase), e.g. 1,3; M > 1 needs --data.few_shot_pool")
    parser.add_argument("--short_groups", type=Literal["refuse", "use_all"], default="refuse",
                        help="A group with fewer paraphrases than the largest K: refuse (default), or use_all: ask "
                             "it with all it has at every larger K (a paraphrase file's groups are of unequal size)")
    parser.add_argument("--bidirectional", type=bool, default=False,
                        help="Lemma match also accepts the prediction inside a gold answer")
    parser.add_argument("--batch_rows", type=int, default=72,
                        help="Member rows encoded per batch: max(1, batch_rows // (K_max x M_max)) facts a batch")
    parser.add_argument("--resamples", type=int, default=2000, help="Bootstrap resamples of the gains' intervals")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the bootstrap")
    parser.add_argument("--chooser_folds", type=int, default=5,
                        help="Folds (by fact) of a RerankHead(rule=learned) without a chooser file: each fact is "
                             "picked by the chooser fit on the other folds")
    parser.add_argument("--output_dir", type=str, default="outputs/sweep", help="Where runs, tables and charts go")
    return parser


def settings_view(cfg):
    """``cfg`` as the sweep's settings record it (``facts.settings.json``, every run's ``summary.json``): the model's
    name, ``max_new_tokens`` and ``stop`` at the top level, where they were before the flags moved under
    ``--model.*``, so that rows and runs written then are still reused."""
    view = cfg.clone()
    view.model, view.max_new_tokens, view.stop = cfg.model.model, cfg.model.max_new_tokens, cfg.model.stop
    return view


def prepare(parser, argv: list[str] | None, check_flags=None):
    """Parse and check the flags, load the groups and the model: ``(cfg, heads, labels, sweep)``. Every check that
    needs no model comes first (``check_flags(cfg)``: the calling verb's own), so that a mistake is said before the
    model loads and before anything is written."""
    cfg = parser.parse_args(rename_flags(sys.argv[1:] if argv is None else argv, RENAMED))
    for flag, value, least in (("--batch_rows", cfg.batch_rows, 1), ("--resamples", cfg.resamples, 1),
                               ("--chooser_folds", cfg.chooser_folds, 2)):
        if value < least:
            raise UserError(f"{flag} must be >= {least}, got {value}")
    check_writable_dir(cfg.output_dir, "--output_dir")
    if check_flags is not None:
        check_flags(cfg)
    ms = int_list(cfg.ms, "--ms")
    if cfg.data.demo_blocks not in (1, max(ms)):
        raise UserError(f"--data.demo_blocks={cfg.data.demo_blocks}: the sweep sets it to the largest of --ms "
                         f"({max(ms)}); leave it out")
    cfg.data.demo_blocks = max(ms)
    device_and_dtype(cfg)  # a device or dtype this torch cannot use: said before the data is read
    init = instantiate(parser, cfg)
    heads = list(init.heads)
    check_selection(heads, cfg.data.demo_selection, max(ms))
    labels = [h.label for h in heads]
    for label in labels:
        if labels.count(label) > 1 or label in BUILT_IN:
            raise UserError(f"--heads: two heads (or a head and a built-in run) are both called {label!r}")
    data = init.data
    data.setup("predict")
    sizes = {len(g["paraphrases"]) for g in data.groups}
    largest = max(sizes) if cfg.short_groups == "use_all" else min(sizes)
    ks = int_list(cfg.ks, "--ks") if cfg.ks is not None else list(range(1, largest + 1))
    for g in data.groups:
        if not g["answers"]:
            raise UserError(f"record {g['id']!r} has no answers: the sweep scores every method against them")
        if len(g["paraphrases"]) < max(ks) and cfg.short_groups == "refuse":
            raise UserError(f"record {g['id']!r} has {len(g['paraphrases'])} paraphrases, fewer than the largest "
                             f"of --ks ({max(ks)}); --short_groups use_all asks such a group with all it has")
    grid = Grid(tuple(ks), tuple(ms))
    groups = [dict(g, paraphrases=g["paraphrases"][:grid.k_max]) for g in data.groups]
    decoder = load_model(cfg)
    for head in heads:  # a chooser file fit with one model refuses another (as the head does in predict)
        if (model := chooser_file(head)) is not None:
            model.check_model(decoder.model)
    sweep = Sweep(settings_view(cfg), grid, groups, decoder, PromptTokenizer(decoder.tokenizer, data.template))
    dtype = dtype_setting(device_and_dtype(cfg)[1])
    if dtype is not None:  # answers differ by dtype: rows and runs made in another one are not reused
        sweep.base["dtype"] = dtype
    return cfg, heads, labels, sweep


def check_writable_dir(path, flag: str) -> None:
    """``path`` is, or can be made, a directory: the nearest part of it that exists is a directory (nothing is made
    here). One error naming ``flag`` otherwise."""
    path = Path(path)
    existing = next((p for p in [path, *path.parents] if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UserError(f"{flag}={path}: cannot make the directory ({existing} is a file)")


def chooser_file(head):
    """The chooser file (:class:`~selfens_pl.scoring.chooser.Chooser`) ``head`` answers with, or its ensemble (a
    cascade's) does; ``None`` without one."""
    for own in (head, getattr(head, "ensemble", None)):
        if getattr(own, "model", None) is not None:
            return own.model
    return None


def fits_layout(head, k: int, m: int) -> bool:
    """Whether the sweep reports ``head`` at ``(k, m)``: a head with a chooser file only at the layout it was fit at
    (``Chooser.fits``: the head refuses the others), every other head everywhere."""
    model = chooser_file(head)
    return model is None or model.fits(k, m)


def main(argv: list[str] | None = None) -> Path:
    start, cpu_start = time.perf_counter(), time.process_time()
    cfg, heads, labels, sweep = prepare(build_parser(), argv)
    grid, groups = sweep.grid, sweep.groups
    plans = [plan_for(h) for h in heads]
    needs = engine_needs(plans)
    for head, label in zip(heads, labels):
        skipped = [(k, m) for k, m in grid.configs() if not fits_layout(head, k, m)]
        if skipped:
            k_fit, m_fit = chooser_file(head).layout
            print(f"[sweep] {label}: its chooser file was fit at K={k_fit} M={m_fit}; not reported at "
                  f"{', '.join(f'K={k} M={m}' for k, m in skipped)}")
    stopping.resumable(str(sweep.out))  # facts.jsonl and every finished run are reused by the same command
    with stopping.after_batch():  # SIGTERM / SIGINT: once the batch of facts in flight is in facts.jsonl
        facts, engine_seconds = sweep.engine(needs.rules, needs.rescore, needs.first_tokens, needs.demo_answers)
    derive = Deriver(facts, groups, grid, sweep.is_match)
    runs = [derive.per_prompt(), derive.origin()]
    baselines = Baselines(runs[1].records, runs[0].records)  # origin, the mean single paraphrase, member, oracle
    vote, smallest = VoteHead(), min(grid.ks)
    for k, m in grid.configs():
        runs.append(derive.derived("vote", vote, k, m))
        for head, label, plan in zip(heads, labels, plans):
            if not plan.runs_at(k, m, smallest):  # a control without its blocks, or asked again at another K
                continue
            if plan.how == "rule" and (k, m) in fused_configs(grid):
                runs.append(derive.fused(head, k, m))
            elif plan.how == "derived" and plan.cross_validated:
                runs.append(derive.cross_validated(label, head, k, m, cfg.chooser_folds))
            elif plan.how == "derived" and fits_layout(head, k, m):
                runs.append(derive.derived(label, head, k, m))
    for run in runs:
        run.seconds = 0.0
        sweep.save(run, None, "the engine pass (facts.jsonl)")
    for head, label, plan in zip(heads, labels, plans):
        if plan.how == "generic":
            for k, m in grid.configs():
                if not (k * m == 1 and plan.one_member_is_origin) and fits_layout(head, k, m) and \
                        plan.runs_at(k, m, smallest):
                    runs.append(sweep.generic(head, label, k, m))
    for run in runs:  # which runs are controls, and which stand for every K (report.gains)
        plan = dict(zip(labels, plans)).get(run.method)
        if plan is not None and plan.control:
            run.extra.update(control=True, ignores_k=plan.ignores_k)
    return write_outputs(sweep, runs, baselines, engine_seconds, time.perf_counter() - start,
                         time.process_time() - cpu_start)
