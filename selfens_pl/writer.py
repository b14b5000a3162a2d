"""``PredictionWriter``: one JSON line per record while predicting, a merged file and a summary at the end.

Each process writes ``predictions.rank{R}.jsonl`` as batches finish (so a crash loses at most one batch); at the end
rank 0 merges the parts into ``predictions.jsonl`` ordered by id and writes ``summary.json`` with the scores the
LightningModule reduced across processes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from lightning.pytorch.callbacks import BasePredictionWriter

SUMMARY = "summary.json"
PREDICTIONS = "predictions.jsonl"


class PredictionWriter(BasePredictionWriter):
    def __init__(self, output_dir: str = "outputs/predict"):
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self._start = 0.0
        self._file = None
        self._n_groups = 0

    def part_path(self, rank: int) -> Path:
        return self.output_dir / f"predictions.rank{rank}.jsonl"

    def on_predict_start(self, trainer, pl_module) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        # A summary from an earlier run must not sit beside half-written new predictions.
        if trainer.is_global_zero:
            (self.output_dir / SUMMARY).unlink(missing_ok=True)
        self._file = self.part_path(trainer.global_rank).open("w", encoding="utf-8")
        self._n_groups = 0
        self._start = time.perf_counter()

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        for rec in prediction:
            self._file.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self._file.flush()
        self._n_groups += len(batch["groups"])

    def on_predict_end(self, trainer, pl_module) -> None:
        self._file.close()
        seconds = time.perf_counter() - self._start
        scores = pl_module.compute_scores()
        n_groups = int(trainer.strategy.reduce(_tensor(self._n_groups, pl_module), reduce_op="sum"))
        trainer.strategy.barrier()
        if not trainer.is_global_zero:
            return
        records = merge_parts(self.output_dir, trainer.world_size)
        summary = {
            "method": pl_module.head.method,
            "model": pl_module.hparams.model,
            "n": n_groups,
            "records": len(records),
            **scores,
            "seconds": round(seconds, 3),
            "questions_per_s": round(n_groups / seconds, 3) if seconds else None,
        }
        (self.output_dir / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
        print(format_table([summary]))
        print(f"predictions: {self.output_dir / PREDICTIONS}")


def _tensor(value, pl_module):
    import torch

    return torch.tensor(float(value), device=pl_module.device)


def merge_parts(output_dir: Path, world_size: int) -> list[dict]:
    """Merge every rank's part into ``predictions.jsonl`` ordered by (id, paraphrase index)."""
    records = []
    for rank in range(world_size):
        part = output_dir / f"predictions.rank{rank}.jsonl"
        with part.open(encoding="utf-8") as fh:
            records += [json.loads(line) for line in fh if line.strip()]
    records.sort(key=lambda r: (str(r["id"]), r.get("paraphrase_index") or 0))
    with (output_dir / PREDICTIONS).open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return records


def format_table(summaries: list[dict]) -> str:
    """A short fixed-width accuracy table, one row per summary."""
    head = f"{'method':<22} {'n':>5} {'accuracy':>9} {'EM':>7} {'F1':>7} {'q/s':>8}"
    lines = [head, "-" * len(head)]
    for s in summaries:
        acc = s.get("accuracy")
        lines.append(
            f"{s['method']:<22} {s['n']:>5} {'' if acc is None else f'{100 * acc:8.1f}%':>9} "
            f"{s.get('exact_match', float('nan')):7.1f} {s.get('f1', float('nan')):7.1f} "
            f"{s.get('questions_per_s') or 0:8.2f}"
        )
    return "\n".join(lines)
