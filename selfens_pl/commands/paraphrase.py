"""Generate paraphrases of questions with a language model, keep only those that pass quality checks, and write a
groups file.

    python -m selfens_pl paraphrase --config configs/paraphrase_webqa.yaml
    python -m selfens_pl paraphrase --data.path stanfordnlp/web_questions --data.split test --data.limit 100 \\
        --data.batch_size 16
    python -m selfens_pl paraphrase --data.path questions.jsonl    # {question, answers} records, your ids kept
    python -m selfens_pl paraphrase --config configs/paraphrase_seed_webqa.yaml    # the reference code's sampling settings

The questions are read as predict reads them (``--data.path``, ``--data.source``, ``--data.split``, ``--data.start``,
``--data.limit``; :class:`~selfens_pl.data.datamodule.ParaphraseDataModule`), by default the WebQuestions test split
from the hub; each group's first paraphrase (its question) is paraphrased. ``--data.chat_template model`` renders
the paraphrasing prompt through the model's chat template (default ``none``: the ``Q:``/``A:`` text). The model and
device take predict's flags too (``--model.model``, ``--model.max_new_tokens``, ``--trainer.accelerator``,
``--trainer.precision``). The old flags are still accepted on the command line (CHANGELOG.md): ``--source X`` reads
``X`` as WebQuestions records (``--data.path X --data.source webqa``), ``--split`` / ``--start`` / ``--limit`` /
``--batch_size`` are the ``--data.*`` ones, ``--model`` / ``--max_new_tokens`` the ``--model.*`` ones, ``--device``
is ``--trainer.accelerator``.

Method (:mod:`selfens_pl.scoring.paraphrasing`): a paraphrasing instruction plus five worked examples in the
package's ``Q:``/``A:`` few-shot format; ``num_paraphrases`` sampling slots per question,
slot ``r`` of attempt ``a`` sampled with its own seed ``seed + a * num_paraphrases + r``, first line of the
generation kept. All slots of a question share one prefill (its KV cache is copied once per slot). Each candidate
goes through :mod:`selfens_pl.scoring.paraphrase_checks` (same form and kind of answer, sane length, keeps half the
original's content words and all its names and numbers, adds at most one, not a copy, not a duplicate of a kept
paraphrase, optionally the model's own yes/no judgement); a rejected slot is
sampled again with the next attempt's seed, up to ``max_retries`` times. A question whose slots are still not all
filled is written with fewer paraphrases and ``short: true``; a bad candidate never pads a group.

The paraphrasing model (``--model.model``) need not be the answering model: paraphrase once with a larger model and
answer the file with any model (``predict --data.path <file>``); every record names its ``paraphraser``, which is
how the heads' default ``origin_share: auto`` knows the paraphrases were generated and gives the original question
0.9 of the group's weight (:mod:`selfens_pl.data.origin_share`).

Output: JSONL ``{id, question, answers, paraphrases: [original, kept...], short, rejected: [{text, seed, attempt,
failed: [check, ...]}], paraphraser}`` with the ids the data module gives the questions (WebQuestions:
``webqa-<split>-<index>``, as :func:`selfens_pl.data.sources.webqa_groups` numbers them, ``--data.start`` included;
a file's own ids, else its line numbers), appended and flushed per batch, plus ``<output>.settings.json`` (model, sampling
and check settings). A rerun skips the ids already written (a half-written last line is dropped first) and refuses
a file written with other settings; a complete file is reused without loading the model. At the end the file's
statistics are printed (kept, mean per question, rejections by check); ``report`` prints them for every run that
answered such a file.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import selfens_pl.stopping as stopping
from selfens_pl.commands import RENAMED, device_and_dtype, dtype_setting, instantiate, load_model, \
    model_and_data_parser, rename_flags
from selfens_pl.data.datamodule import HUB_SOURCES, auto_source
from selfens_pl.errors import UserError
from selfens_pl.jsonl import append_jsonl, atomic_write, pending_groups, resume_jsonl
from selfens_pl.progress import ProgressBar
from selfens_pl.scoring.paraphrase_checks import (
    TEXT_CHECKS,
    CheckSettings,
    EquivalenceJudge,
    ParaphraseChecker,
    format_statistics,
    paraphrase_statistics,
)
# the sampling defaults (chosen on WebQuestions train questions 200-299 with the embedded model:
# studies/paraphrase_checks/) are shared with ask and the Python API
from selfens_pl.scoring.paraphrasing import DEFAULT_TEMPERATURE, DEFAULT_TOP_P, paraphrase_groups, paraphrase_sampler


#: The default questions: WebQuestions from the hub (``--data.split``, default test).
WEBQUESTIONS = next(hub for hub, schema in HUB_SOURCES.items() if schema == "webqa")

#: The old flags (still accepted on the command line) -> their names now. ``--source`` read WebQuestions records.
PARAPHRASE_RENAMED = {**RENAMED, "--source": "--data.path", "--split": "--data.split", "--start": "--data.start",
                      "--limit": "--data.limit", "--batch_size": "--data.batch_size"}


def model_tag(name: str) -> str:
    """A file-system friendly name for a model: a local directory's name, or the hub id with ``/`` -> ``--``."""
    local = Path(name).expanduser()
    return local.name if local.is_dir() else name.replace("/", "--")


def source_tag(source: str | list[str], split: str) -> str:
    """``web_questions`` for a hub id; for a local file its stem, or its folder's name when the stem is the
    split (``../shared/data/webquestions/train.jsonl`` -> ``webquestions``); several sources joined by ``+``."""
    if not isinstance(source, str):
        return "+".join(source_tag(one, split) for one in source)
    local = Path(source).expanduser()
    if local.suffix or local.exists():
        return local.parent.name if local.stem == split and local.parent.name else local.stem
    return source.rstrip("/").split("/")[-1]


def build_parser():
    parser = model_and_data_parser(
        "paraphrase", "Generate paraphrases of questions with a language model and keep those that pass the quality "
        "checks.", "The questions (each group's first paraphrase), read as predict reads them",
        max_new_tokens=30, max_new_tokens_help="Most tokens per paraphrase", with_stop=False,
        data_keep=("path", "source", "split", "start", "limit", "batch_size", "chat_template"),
        model_help="Paraphrasing model (need not be the answering one): alias, smollm2-135m-instruct (embedded), "
                   "local directory or hub id; recorded as each record's 'paraphraser'")
    parser.set_defaults({"data.path": WEBQUESTIONS})
    parser.add_argument("--num_paraphrases", type=int, default=4,
                        help="Paraphrases sought per question (the original is kept first: at most K + 1 in all)")
    parser.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE,
                        help="Sampling temperature (chosen on WebQuestions train questions 200-299, README; the "
                             "seed's 1.5 is configs/paraphrase_seed_webqa.yaml)")
    parser.add_argument("--top_p", type=float, default=DEFAULT_TOP_P, help="Nucleus sampling mass")
    parser.add_argument("--seed", type=int, default=42, help="Slot r of attempt a samples with seed + a * K + r")
    parser.add_argument("--max_retries", type=int, default=3,
                        help="Further attempts for a slot whose candidate failed a check, each with a new seed")
    parser.add_argument("--checks", type=list[str], default=list(TEXT_CHECKS),
                        help=f"Text checks a paraphrase must pass, from {list(TEXT_CHECKS)}; [] keeps only the "
                             "empty, copy and duplicate rejections (selfens_pl/scoring/paraphrase_checks.py documents each)")
    parser.add_argument("--min_content", type=float, default=CheckSettings.min_content,
                        help="content: share of the original's content lemmas a paraphrase must keep")
    parser.add_argument("--max_new", type=int, default=CheckSettings.max_new,
                        help="new: most content lemmas a paraphrase may add that the original does not have")
    parser.add_argument("--min_length_ratio", type=float, default=CheckSettings.min_length_ratio,
                        help="length: fewest words, as a multiple of the original's")
    parser.add_argument("--max_length_ratio", type=float, default=CheckSettings.max_length_ratio,
                        help="length: most words, as a multiple of the original's")
    parser.add_argument("--judge", type=bool, default=False,
                        help="Also ask the paraphrasing model whether the two questions ask for the same "
                             "information (log p(yes) - log p(no) >= --judge_margin)")
    parser.add_argument("--judge_margin", type=float, default=0.0, help="judge: least yes-over-no log-odds")
    parser.add_argument("--output", type=str | None, default=None,
                        help="Output JSONL (default outputs/paraphrases/<model>/<data.path>-<data.split>.jsonl)")
    return parser


#: Settings that decide what a record holds: a file written with other values is not resumed.
SETTINGS_KEYS = ("model", "source", "split", "num_paraphrases", "temperature", "top_p", "max_new_tokens", "seed",
                 "max_retries", "checks", "min_content", "max_new", "min_length_ratio", "max_length_ratio", "judge",
                 "judge_margin", "data_source", "dtype", "chat_template")

#: What a settings file written before a key existed meant by it: every earlier file read WebQuestions records
#: (ids ``webqa-<split>-<index>``), loaded the weights in float32 and wrote the text prompt.
LEGACY_SETTINGS = {"data_source": "webqa", "dtype": None, "chat_template": "none"}

#: The flag of a settings key whose name is not the flag's.
SETTINGS_FLAGS = {"model": "--model.model", "source": "--data.path", "split": "--data.split",
                  "max_new_tokens": "--model.max_new_tokens", "data_source": "--data.source",
                  "dtype": "--trainer.precision", "chat_template": "--data.chat_template"}


def settings_path(output: Path) -> Path:
    """``<output>.settings.json`` beside the groups file: the settings that wrote it."""
    return output.with_name(output.name + ".settings.json")


def check_settings(output: Path, settings: dict) -> None:
    """Refuse to extend ``output`` when its settings file records other settings (or is missing beside records)."""
    path = settings_path(output)
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: invalid JSON ({exc.msg}); delete it together with {output}") from None
        changed = sorted(k for k in SETTINGS_KEYS if old.get(k, LEGACY_SETTINGS.get(k)) != settings.get(k))
        if changed:
            flags = ", ".join(SETTINGS_FLAGS.get(k, "--" + k) for k in changed)
            raise UserError(f"{output} was written with other settings ({flags} differ from {path.name}); use "
                             "another --output or delete both files")
    elif output.is_file() and output.stat().st_size:
        raise UserError(f"{output} has records but no {path.name} (written by an older version?); use another "
                         "--output or delete it")


def data_source(data) -> str | list[str]:
    """What the questions were read as (``webqa``, ``groups``, ...; ``auto`` resolved per source): the ids depend
    on it, so a file is not extended with questions read otherwise."""
    hp = data.hparams
    if hp.source != "auto":
        return hp.source
    resolved = [auto_source(one) for one in ([hp.path] if isinstance(hp.path, str) else hp.path)]
    return resolved[0] if isinstance(hp.path, str) else resolved


def main(argv: list[str] | None = None) -> Path:
    parser = build_parser()
    cfg = parser.parse_args(rename_flags(sys.argv[1:] if argv is None else argv, PARAPHRASE_RENAMED,
                                         added={"--source": ["--data.source", "webqa"]}))
    if cfg.num_paraphrases < 1:
        raise UserError(f"--num_paraphrases must be >= 1, got {cfg.num_paraphrases}")
    if cfg.data.batch_size < 1 or cfg.max_retries < 0:
        raise UserError("--data.batch_size must be >= 1 and --max_retries >= 0")
    checks = CheckSettings(tuple(cfg.checks), cfg.min_content, cfg.max_new, cfg.min_length_ratio,
                           cfg.max_length_ratio)
    dtype = dtype_setting(device_and_dtype(cfg)[1])  # a device or dtype this torch cannot use: said first
    data = instantiate(parser, cfg).data
    groups = data.read()
    k = cfg.num_paraphrases
    output = Path(cfg.output or Path("outputs/paraphrases") / model_tag(cfg.model.model)
                  / f"{source_tag(cfg.data.path, cfg.data.split)}-{cfg.data.split}.jsonl")
    named = {"model": cfg.model.model, "source": cfg.data.path, "split": cfg.data.split,
             "max_new_tokens": cfg.model.max_new_tokens, "checks": list(cfg.checks), "data_source": data_source(data),
             "dtype": dtype, "chat_template": cfg.data.chat_template}
    settings = {key: named[key] if key in named else cfg[key] for key in SETTINGS_KEYS}
    check_settings(output, settings)

    def check_record(number: int, rec: dict) -> None:
        n = len(rec.get("paraphrases") or [])
        if not 1 <= n <= k + 1 or "rejected" not in rec:
            raise UserError(f"{output}: line {number}: record {rec['id']!r} is not a paraphrase record of "
                             f"--num_paraphrases={k} ({n} paraphrases; original + at most {k}); use another --output")

    todo = pending_groups(output, groups, check_record, "paraphrase")

    def write_settings() -> None:
        atomic_write(settings_path(output), json.dumps(settings, indent=2) + "\n")

    if todo:  # the settings file is written once the model has loaded: a model that fails to load leaves none
        stopping.resumable(str(output))  # the same command skips the ids already written
        run(cfg, todo, output, k, checks, first_done=len(groups) - len(todo), total=len(groups),
            loaded=write_settings)
    else:
        write_settings()
    ids = {g["id"] for g in groups}
    stats = paraphrase_statistics([r for r in resume_jsonl(output, check_record, "paraphrase").values()
                                   if r["id"] in ids])
    print(f"[paraphrase] {output}: {format_statistics(stats)}")
    return output


def run(cfg, todo: list[dict], output: Path, k: int, settings: CheckSettings, first_done: int, total: int,
        loaded=None) -> None:
    """Load the model (then call ``loaded()``), then paraphrase, check and append ``todo`` batch by batch; SIGTERM or
    SIGINT stops once the batch in flight is appended (:mod:`selfens_pl.stopping`)."""
    start = time.perf_counter()
    decoder = load_model(cfg)
    # the prompt first: a model without the chat template asked for is refused before any file is written
    sample = paraphrase_sampler(decoder, cfg.temperature, cfg.top_p, cfg.model.max_new_tokens, cfg.data.chat_template)
    if loaded is not None:
        loaded()
    checker = ParaphraseChecker(settings, EquivalenceJudge(decoder, cfg.judge_margin) if cfg.judge else None)
    with stopping.after_batch(), ProgressBar(total, "Paraphrasing", unit="questions", done=first_done) as bar:
        for first in range(0, len(todo), cfg.data.batch_size):
            records = paraphrase_groups(sample, todo[first:first + cfg.data.batch_size], k, cfg.seed, cfg.max_retries,
                                        checker)
            for rec in records:
                rec["paraphraser"] = cfg.model.model
            append_jsonl(output, records)
            bar.advance(len(records))
    print(f"[paraphrase] wrote {len(todo)} records to {output} in {time.perf_counter() - start:.1f}s")
