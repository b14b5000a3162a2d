"""Per-paraphrase confidences for the weighted fusion methods (``weighted_avg``, ``weighted_max``).

    python -m selfens_pl confidence --config configs/confidence_webqa.yaml
    python -m selfens_pl confidence --data.path outputs/paraphrases/smollm2-135m-instruct/webquestions-train.jsonl \\
        --data.few_shot_source ../shared/data/webquestions/train.jsonl --num_samples 20 --trainer.accelerator cuda

The model and device take predict's flags (``--model.model``, ``--model.max_new_tokens``,
``--trainer.accelerator``, ``--trainer.precision``: :mod:`selfens_pl.commands`; the old ``--model``,
``--max_new_tokens`` and ``--device`` are still accepted on the command line, CHANGELOG.md).

For every paraphrase of every group (the data is read by :class:`~selfens_pl.data.datamodule.ParaphraseDataModule`, so
``--data.*`` takes the same flags as ``predict`` and the prompt is the one ``predict`` asks), the prompt is
prefilled ONCE and its KV cache copied ``1 + num_samples`` times: row 0 decodes greedily (the answer ``predict``
would give), rows ``1..M`` sample (``temperature``, ``top_p``; sample ``j`` of paraphrase ``k`` of record ``id``
seeded by a hash of ``(seed, id, k, j)``, so it is the same whatever the batch). Every answer is the first line
of its generation.

Confidence of a paraphrase = the share of its ``M`` samples that agree with its greedy answer, where "agree" is
``selfens_pl.scoring.metrics.is_match(sample, [greedy])``: the greedy answer's lemma sequence appears contiguously in the
sample's -- the rule predictions are scored with, with the greedy answer as the gold alias (so "Juneau, Alaska"
agrees with "Juneau", and an empty greedy answer agrees with nothing: confidence 0).

Output: JSONL ``{id, confidences: [one per paraphrase, in paraphrase order], greedy: [...], settings: {...}}``, which
:func:`selfens_pl.data.datamodule.load_confidences` reads (``predict --data.confidences <file>``). Appended and flushed per
batch; a rerun skips ids already written, drops a half-written last line, reuses a complete file, and refuses a
file written with other settings.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

from selfens_pl.commands import RENAMED, device_and_dtype, dtype_setting, instantiate, load_model, \
    model_and_data_parser, rename_flags
from selfens_pl.data.prompts import PromptTokenizer
from selfens_pl.engine.batches import prompt_batch
from selfens_pl.engine.sampling import Sampler
from selfens_pl.errors import InternalError, UserError
from selfens_pl.jsonl import append_jsonl, pending_groups
from selfens_pl.scoring.metrics import is_match


def sample_seed(seed: int, record_id: str, paraphrase: int, sample: int) -> int:
    """Seed of sample ``sample`` of paraphrase ``paraphrase`` of ``record_id`` (63 bits of a SHA-256)."""
    digest = hashlib.sha256(f"{seed}/{record_id}/{paraphrase}/{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def agreement(greedy: str, samples: list[str]) -> float:
    """Share of ``samples`` that match ``greedy`` under ``is_match(sample, [greedy])``."""
    if not samples:
        raise InternalError("agreement needs at least one sample")
    return sum(is_match(s, [greedy]) for s in samples) / len(samples)


def build_parser():
    # answers are the first line of a generation (the rule of the confidence): no --model.stop
    parser = model_and_data_parser("confidence", "Per-paraphrase confidence: agreement of sampled answers with the "
                                   "greedy one.", "The groups to score, exactly as predict's --data (batches: "
                                   "--batch_size)", max_new_tokens=20, with_stop=False)
    parser.add_argument("--num_samples", type=int, default=100, help="Sampled answers per paraphrase (M)")
    parser.add_argument("--temperature", type=float, default=1.0, help="Sampling temperature")
    parser.add_argument("--top_p", type=float, default=1.0, help="Nucleus sampling mass")
    parser.add_argument("--seed", type=int, default=42, help="Base seed of every sample")
    parser.add_argument("--batch_size", type=int, default=1,
                        help="Paraphrase prompts per prefill; each becomes 1 + num_samples cached rows")
    parser.add_argument("--output", type=str | None, default=None,
                        help="Output JSONL (default outputs/confidence_<data.task>/confidences.jsonl)")
    return parser


def main(argv: list[str] | None = None) -> Path:
    parser = build_parser()
    cfg = parser.parse_args(rename_flags(sys.argv[1:] if argv is None else argv, RENAMED))
    m = cfg.num_samples
    if m < 1 or cfg.batch_size < 1:
        raise UserError(f"--num_samples and --batch_size must be >= 1, got {m} and {cfg.batch_size}")
    dtype = dtype_setting(device_and_dtype(cfg)[1])  # a device or dtype this torch cannot use: said first
    data = instantiate(parser, cfg).data
    data.setup("predict")
    groups, template = data.groups, data.template
    output = Path(cfg.output or f"outputs/confidence_{data.hparams.task}/confidences.jsonl")
    settings = {"model": cfg.model.model, "num_samples": m, "temperature": cfg.temperature, "top_p": cfg.top_p,
                "max_new_tokens": cfg.model.max_new_tokens, "seed": cfg.seed}
    if dtype is not None:  # (files made in float32, all before --trainer.precision, keep the settings they have)
        settings["dtype"] = dtype
    sizes = {g["id"]: len(g["paraphrases"]) for g in groups}

    def check(number: int, rec: dict) -> None:
        if rec.get("settings") != settings:
            raise UserError(f"{output}: line {number}: written with settings {rec.get('settings')}, this run uses "
                             f"{settings}; use another --output or delete the file")
        n = len(rec.get("confidences") or [])
        if rec["id"] in sizes and n != sizes[rec["id"]]:
            raise UserError(f"{output}: line {number}: record {rec['id']!r} has {n} confidences for "
                             f"{sizes[rec['id']]} paraphrases; use another --output or delete the file")

    todo = pending_groups(output, groups, check, "confidence")
    if not todo:
        return output

    start = time.perf_counter()
    decoder = load_model(cfg)
    sampler = Sampler(decoder, cfg.temperature, cfg.top_p, cfg.model.max_new_tokens, stop="\n")
    prompts = PromptTokenizer(decoder.tokenizer, template)
    items = [(gi, k) for gi, g in enumerate(todo) for k in range(len(g["paraphrases"]))]
    results: dict[int, list] = {gi: [None] * len(g["paraphrases"]) for gi, g in enumerate(todo)}
    next_group = 0  # groups are written in order, as soon as all their paraphrases are scored
    for first in range(0, len(items), cfg.batch_size):
        chunk = items[first:first + cfg.batch_size]
        seeds = [s for gi, k in chunk for s in [None] + [sample_seed(cfg.seed, todo[gi]["id"], k, j) for j in range(m)]]
        batch = prompt_batch(decoder, prompts, [(todo[gi], todo[gi]["paraphrases"][k]) for gi, k in chunk])
        gens = sampler.sample(batch, seeds, repeat=1 + m)
        for i, (gi, k) in enumerate(chunk):
            rows = gens[i * (1 + m):(i + 1) * (1 + m)]
            greedy = rows[0].prediction
            results[gi][k] = (agreement(greedy, [g.prediction for g in rows[1:]]), greedy)
        finished = []
        while next_group < len(todo) and all(r is not None for r in results[next_group]):
            g = todo[next_group]
            finished.append({"id": g["id"], "confidences": [c for c, _ in results[next_group]],
                             "greedy": [a for _, a in results[next_group]], "settings": settings})
            next_group += 1
        append_jsonl(output, finished)
        if finished:
            print(f"[confidence] {len(groups) - len(todo) + next_group}/{len(groups)} records "
                  f"({time.perf_counter() - start:.1f}s)", flush=True)
    print(f"[confidence] wrote {len(todo)} records to {output} in {time.perf_counter() - start:.1f}s")
    return output
