"""``PredictionWriter``: one JSON line per record while predicting, a merged file and a summary at the end.

Files in ``output_dir``:

* ``predictions.rank{R}.jsonl``: process R's part, appended batch by batch while predicting. After the records of a
  batch comes a commit line ``{"_batch": batch_idx, "_records": n}``; records count only once their batch's commit
  line is on disk, so **ids are written (and reused) in whole batches**: a crash loses at most the batch being
  written, and a half-written last line is dropped.
* ``predictions.jsonl``: at the end rank 0 merges every part (and the records reused from earlier runs) into this
  file, ordered by (id, paraphrase index), and removes the parts. Written atomically (temporary file + rename).
* ``summary.json``: written last, only after ``predictions.jsonl`` is complete; removed when a run starts, so a
  summary never sits beside incomplete predictions. Every score is a fraction in [0, 1] (accuracy, EM, F1, oracles),
  computed over the merged records (every id once, reused and new); ``run`` holds this run's own share (its scores,
  reduced across processes by the module's torchmetrics, only when some ids were resumed: otherwise they are the
  whole's, and are checked to equal them), and
  ``questions_per_s`` is this run's own speed: the questions it answered over its predict time (``null`` when every
  id was resumed). A ``per_prompt`` run adds ``accuracy_by_paraphrase`` and ``oracle_accuracy``
  (:mod:`selfens_pl.scoring.summaries`). The same figures are printed as a table at the end.

Resume (``resume=True``, the default): before predicting, every process reads the committed records of the output
directory (``predictions.jsonl`` and part files written by any number of processes), rank 0 consolidates them into
``predictions.jsonl``, and the data module skips their ids (``datamodule.skip_ids``). ``resume=False``: the CLI
has deleted the earlier run (its predictions, parts and summary) once every check passed, before writing the new
``config.yaml`` (:meth:`selfens_pl.lit.cli.SelfEnsembleCLI.before_predict`). The CLI refuses to resume when a setting
that changes the records differs from the output directory's ``config.yaml``: the model, head and data settings,
``--data.limit`` and ``--data.start`` included (only ``--data.batch_size`` / ``num_workers`` and the process count
may change; :func:`selfens_pl.lit.preflight.check_resumable`). Every file is read under the package's one JSONL
policy (:mod:`selfens_pl.jsonl`).

Stopping: SIGTERM or SIGINT while predicting stops the run once the batch in flight is committed
(:mod:`selfens_pl.stopping`; a part file holds every finished batch, nothing is merged and no summary is written);
the same command (with ``--resume true`` where it said false) answers the rest. The part file is opened with the
first batch, so a run that fails before it leaves none.

Processes: one device, or ``ddp`` (``ddp_spawn``, ...) with any number of processes; the data module shards the
groups itself (process r takes groups r, r + W, ...; nothing padded or repeated; a share may be empty). Under
``model_parallel`` (tensor parallelism) the groups are sharded over the data-parallel replicas, every process of a
tensor-parallel group answers the same groups, and only the group's first process writes them.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torchmetrics import Metric

import selfens_pl.stopping as stopping
from selfens_pl.distributed import tensor_parallel_rank
from selfens_pl.errors import InternalError, UserError
from selfens_pl.jsonl import atomic_write, read_objects, write_records
from selfens_pl.scoring.paraphrase_checks import file_statistics, format_statistics
from selfens_pl.scoring.summaries import format_table, paraphrase_scores, record_scores

SUMMARY = "summary.json"
PREDICTIONS = "predictions.jsonl"
PART_GLOB = "predictions.rank*.jsonl"
COMMIT = "_batch"


class PredictionWriter(BasePredictionWriter):
    def __init__(self, output_dir: str = "outputs/predict", resume: bool = True):
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.resume = resume
        self._file = None
        self._stoppable = False
        self._start = 0.0
        self._seconds = 0.0
        self._n_groups = 0
        self._n_records = 0
        self._n_resumed = 0

    def part_path(self, rank: int) -> Path:
        return self.output_dir / f"predictions.rank{rank}.jsonl"

    # -- before predicting: read what earlier runs finished ------------------------------------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "predict":
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._n_groups = self._n_records = 0  # stays 0 where this process's share is empty (no predict hooks)
        self._seconds = 0.0
        done = read_done(self.output_dir, report=trainer.is_global_zero) if self.resume else {}
        dataset_ids = _dataset_ids(trainer)
        if dataset_ids is not None:
            done = {key: recs for key, recs in done.items() if key in dataset_ids}
        self._n_resumed = len(done)
        trainer.strategy.barrier("selfens_pl.lit.writer: read")  # every process has read before rank 0 rewrites
        if trainer.is_global_zero:
            (self.output_dir / SUMMARY).unlink(missing_ok=True)
            if done:
                write_records(self.output_dir / PREDICTIONS, [r for recs in done.values() for r in recs])
            else:
                (self.output_dir / PREDICTIONS).unlink(missing_ok=True)
            for part in self.output_dir.glob(PART_GLOB):
                part.unlink()
        trainer.strategy.barrier("selfens_pl.lit.writer: consolidated")
        if done:
            datamodule = trainer.datamodule
            if datamodule is None or not hasattr(datamodule, "skip_ids"):
                raise UserError(f"{self.output_dir} holds predictions for {len(done)} ids, but the data module "
                                 "cannot skip ids: pass --resume false or another --output_dir")
            datamodule.skip_ids = set(done)
            left = None if dataset_ids is None else len(dataset_ids) - len(done)
            if left == 0:
                # Lightning warns about the empty loader; here it is expected, and said below
                warnings.filterwarnings("ignore", message=r"Total length of `DataLoader` across ranks is zero")
            if trainer.is_global_zero:
                rest = ("nothing left to answer (--resume false answers them afresh)" if left == 0
                        else "answering the rest" if left is None else f"answering the other {left}")
                print(f"resume: {len(done)} ids already in {self.output_dir}, {rest}")

    # -- while predicting ---------------------------------------------------------------------------------------
    def on_predict_start(self, trainer, pl_module) -> None:
        self._file = None  # opened with the first batch: a run that fails before it leaves no empty part file
        self._n_groups = self._n_records = 0
        self._start = time.perf_counter()
        stopping.enter()  # SIGTERM / SIGINT from here on: stop after the batch in flight is committed
        self._stoppable = True

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        if tensor_parallel_rank(trainer.strategy):  # a tensor-parallel group answers once: its first process writes
            stopping.checkpoint()
            return
        lines = [json.dumps(rec, ensure_ascii=False) + "\n" for rec in prediction]
        lines.append(json.dumps({COMMIT: batch_idx, "_records": len(prediction)}) + "\n")
        if self._file is None:
            self._file = self.part_path(trainer.global_rank).open("w", encoding="utf-8")
        self._file.write("".join(lines))
        self._file.flush()
        self._n_groups += len(batch["groups"])
        self._n_records += len(prediction)
        stopping.checkpoint()  # the batch is committed: a stop signalled meanwhile takes effect now

    def on_predict_end(self, trainer, pl_module) -> None:
        self._close()
        self._seconds = time.perf_counter() - self._start
        self._stoppable = False
        stopping.leave()  # a stop signalled after the last batch: no merge, no summary (resuming writes them)

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._close()
        if self._stoppable:
            self._stoppable = False
            stopping.leave(stop_pending=False)

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    # -- after predicting: merge and summarise --------------------------------------------------------------------
    def teardown(self, trainer, pl_module, stage: str) -> None:
        # Here rather than in on_predict_end: a process whose share is empty (fewer groups left than processes)
        # skips the predict loop and its hooks, but every process reaches teardown, so the collectives below match.
        # Lightning only calls teardown after a successful run: a failed run never writes a summary.
        if stage != "predict":
            return
        strategy = trainer.strategy
        _metrics_to(pl_module, strategy.root_device)  # the strategy's teardown moved the module to the CPU
        per_process = [int(v) for v in strategy.all_gather(_tensor(self._n_groups, strategy)).reshape(-1)]
        n_groups = sum(per_process)
        n_records = int(strategy.reduce(_tensor(self._n_records, strategy), reduce_op="sum"))
        seconds = float(strategy.reduce(_tensor(self._seconds, strategy), reduce_op="max"))
        run_scores = pl_module.compute_scores() if n_groups else {}
        strategy.barrier("selfens_pl.lit.writer: parts closed")
        if not trainer.is_global_zero:
            return
        done = read_done(self.output_dir)
        dataset_ids = _dataset_ids(trainer)
        if dataset_ids is not None:
            missing = dataset_ids - done.keys()
            if missing:
                warnings.warn(f"{len(missing)} of {len(dataset_ids)} ids have no predictions (limited run?)",
                              stacklevel=1)
            done = {key: recs for key, recs in done.items() if key in dataset_ids}
        records = write_records(self.output_dir / PREDICTIONS, [r for recs in done.values() for r in recs])
        for part in self.output_dir.glob(PART_GLOB):
            part.unlink()
        scores = record_scores(records)
        if not self._n_resumed:
            check_synced_scores(run_scores, scores)
        summary = {
            "method": pl_module.head.method,
            "model": pl_module.hparams.model,
            "n": len(done),
            "records": len(records),
            **scores,
            **paraphrase_scores(pl_module.head.method, records),
            "resumed": self._n_resumed,
            # this run's own share; its scores only when they differ from the whole's (some ids were resumed)
            "run": {"n": n_groups, "records": n_records, "n_per_process": per_process,
                    **({k: round(v, 6) for k, v in run_scores.items()} if self._n_resumed else {})},
            # this run's own speed: the questions it answered (not those resumed) over its predict time
            "seconds": round(seconds, 3),
            "questions_per_s": round(n_groups / seconds, 3) if n_groups and seconds else None,
        }
        paraphrased = _paraphrase_file(trainer, done.keys())
        if paraphrased is not None:
            summary["paraphrase_file"] = paraphrased
        atomic_write(self.output_dir / SUMMARY, json.dumps(summary, indent=2) + "\n")
        print(format_table([summary]))
        if paraphrased is not None:
            print(f"paraphrases ({paraphrased['path']}, by {', '.join(paraphrased['paraphrasers']) or '?'}): "
                  f"{format_statistics(paraphrased)}")
        if self._n_resumed:
            print(resume_note(summary, self.output_dir))
        print(f"predictions: {self.output_dir / PREDICTIONS}")


def check_synced_scores(run_scores: dict, scores: dict) -> None:
    """A run that resumed nothing scores the same records twice: once through the module's torchmetrics, synced
    across processes, and once from the merged file. They must agree; a difference is a bug in the sync."""
    for key, value in run_scores.items():
        if key in scores and abs(value - scores[key]) > 1e-4:
            raise InternalError(f"summary: {key} from the synced metrics ({value}) differs from the merged "
                                f"records' ({scores[key]})")


def _paraphrase_file(trainer, ids) -> dict | None:
    """The statistics of the groups file the run answered, over ``ids``, when ``paraphrase`` wrote it (kept,
    rejected by which check, mean per question; :func:`selfens_pl.scoring.paraphrase_checks.file_statistics`).
    ``None`` only when decided: the data is not a groups ``.jsonl`` file, or its records show that ``paraphrase``
    did not write it. A file that cannot be read raises: the summary never drops its statistics silently."""
    hparams = getattr(trainer.datamodule, "hparams", None) or {}
    path = hparams.get("path")
    if hparams.get("source", "groups") not in ("groups", "auto") or not isinstance(path, str) or not path.endswith(".jsonl"):
        return None
    stats = file_statistics(path, {str(i) for i in ids})
    return None if stats is None else {"path": path, **stats}


def _dataset_ids(trainer) -> set[str] | None:
    groups = getattr(trainer.datamodule, "groups", None)
    return None if groups is None else {str(g["id"]) for g in groups}


def _tensor(value, strategy):
    return torch.tensor(float(value), device=strategy.root_device)


def _metrics_to(pl_module, device) -> None:
    for module in pl_module.modules():
        if isinstance(module, Metric):
            module.to(device)


# -- files ---------------------------------------------------------------------------------------------------------
# Read under the package's one JSONL policy (selfens_pl.jsonl): a half-written last line is skipped and said (its
# batch is answered again); any other bad line is one error naming file and line.
def read_part(path: Path, report: bool = True) -> list[dict]:
    """The committed records of one part file: records followed by their batch's commit line. Records after the last
    commit line (a batch cut short) are left out, and said; a commit line that counts other records than those
    before it is an error naming the line. ``report=False``: say nothing (a process other than rank 0)."""
    committed, pending = [], []
    for number, obj in read_objects(path, tool="predict", report=report):
        if COMMIT not in obj:
            pending.append(_with_id(path, number, obj))
            continue
        if obj.get("_records") != len(pending):
            raise UserError(f"{path}: line {number}: commit line of batch {obj[COMMIT]!r} counts "
                            f"{obj.get('_records')!r} records, {len(pending)} precede it; delete the file")
        committed += pending
        pending = []
    if pending and report:
        print(f"[predict] {path}: {len(pending)} records after the last commit line (a batch cut short) are "
              "answered again", flush=True)
    return committed


def read_merged(path: Path, report: bool = True) -> list[dict]:
    """Records of a merged ``predictions.jsonl`` (no commit lines)."""
    return [_with_id(path, number, obj) for number, obj in read_objects(path, tool="predict", report=report)]


def _with_id(path: Path, number: int, rec: dict) -> dict:
    if rec.get("id") in (None, ""):
        raise UserError(f"{path}: line {number}: a prediction record without an 'id'")
    return rec


def read_done(output_dir: Path, report: bool = True) -> dict[str, list[dict]]:
    """``{id: records}`` finished in ``output_dir``: ``predictions.jsonl`` first, then every part file (any number of
    processes). An id is taken from the first file that has it, so a copy in two files counts once (a run stopped
    between writing the merged file and removing the parts)."""
    output_dir = Path(output_dir)
    sources = []
    if (output_dir / PREDICTIONS).is_file():
        sources.append(read_merged(output_dir / PREDICTIONS, report))
    parts = sorted(output_dir.glob(PART_GLOB), key=lambda p: (len(p.name), p.name))
    sources += [read_part(p, report) for p in parts]
    done: dict[str, list[dict]] = {}
    for records in sources:
        by_id: dict[str, list[dict]] = {}
        for rec in records:
            by_id.setdefault(str(rec["id"]), []).append(rec)
        for key, recs in by_id.items():
            done.setdefault(key, recs)
    return done


def resume_note(summary: dict, output_dir: Path) -> str:
    """What a resumed run's figures cover: accuracy over every id, speed over the ids it answered itself."""
    n, answered = summary["n"], summary["run"]["n"]
    if not answered:
        return (f"resumed: all {n} ids were already answered in {output_dir}; this run answered none, so it "
                "measured no speed (--resume false answers them afresh); accuracy, EM and F1 cover all of them")
    return (f"resumed: {summary['resumed']} of {n} ids were already answered in {output_dir}; q/s covers the "
            f"{answered} this run answered, accuracy, EM and F1 all {n}")
