"""``SelfEnsembleLM``: the LightningModule that wraps a causal LM with a swappable fusion head."""

from __future__ import annotations

from typing import Literal

import torch
from lightning import LightningModule

from selfens_pl.data.prompts import PromptTemplate, PromptTokenizer
from selfens_pl.distributed import TP_DIM
from selfens_pl.engine.decoding import GreedyDecoder
from selfens_pl.engine.kv_cache import CACHE_LENGTHS
from selfens_pl.engine.models import DEFAULT_MAX_NEW_TOKENS, EMBEDDED_MODEL, load_model_and_tokenizer
from selfens_pl.engine.parallel import execution_device, execution_devices, is_dispatched, weight_bytes
from selfens_pl.errors import UserError
from selfens_pl.heads import FlexFusion, FusionHead, OriginHead
from selfens_pl.lit.training import answer_loss, check_trainable
from selfens_pl.scoring.choice import score_choice
from selfens_pl.scoring.metrics import LemmaMatchAccuracy, SquadScores
from selfens_pl.scoring.summaries import score_oracles


class SelfEnsembleLM(LightningModule):
    """A Hugging Face causal LM answering paraphrase groups through a fusion head.

    ``predict_step`` returns one record per answer (``{id, method, paraphrase_index, paraphrases, generation,
    prediction, answers, correct}``) and accumulates lemma-match accuracy and SQuAD EM/F1 (synced under DDP).
    """

    def __init__(
        self,
        model: str = EMBEDDED_MODEL,
        head: FusionHead | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        stop: str | None = "\n",
        score: bool = True,
        bidirectional: bool = False,
        share_prefix: bool = True,
        compile: bool | Literal["auto"] = "auto",
        cache_lengths: int = CACHE_LENGTHS,
        trust_remote_code: bool = False,
        learning_rate: float = 1e-4,
        weight_decay: float = 0.0,
        lora_rank: int = 0,
        lora_alpha: float = 16.0,
        lora_targets: list[str] | None = None,
        device_map: str | dict[str, int | str] | None = None,
        max_memory: dict[str, int | str] | None = None,
        offload_folder: str | None = None,
    ):
        """
        Args:
            model: Alias (``llama3.2_3b_it``, ...), ``smollm2-135m-instruct`` (embedded), local directory or hub id.
            head: Fusion head (``class_path``): OriginHead (default), PerPromptHead, LogitFusion, FlexFusion (each
                also fine-tunes with its own layout), VoteHead, RerankHead, CascadeHead (predict only: fit refuses
                them; fine-tune with PerPromptHead, then predict with them from its checkpoint).
            max_new_tokens: Most tokens generated per answer.
            stop: Stop string ending an answer once it has started (default newline: answers are one line).
            score: Score predictions against the groups' answers (a group without answers is then an error).
            bidirectional: Lemma match also accepts the prediction inside a gold answer.
            share_prefix: Encode the instruction + few-shot prefix once per batch and share its KV cache across
                rows (origin, per_prompt, LogitFusion). Off: every row encodes its whole prompt.
            compile: Compile the decode step with ``torch.compile`` (static KV cache, fixed shapes; CUDA graphs on
                CUDA): ``auto`` compiles on CUDA only, ``true`` / ``false`` force it. The first batch of each shape
                pays the compilation (tens of seconds for a 3B model); a compile failure raises, never silently
                decodes eagerly.
            cache_lengths: Compiled decoding keeps the static KV caches of this many cache lengths (prompt width +
                ``max_new_tokens``, in buckets of 128 tokens) for later batches of the same shape, which then replay
                the compiled step (and its CUDA graphs) on the same buffers; a new length evicts the least recently
                used one. Memory: at most about twice the largest batch's KV cache per kept length. Lower it when
                GPU memory is short; raise it when prompt widths spread over more buckets (an evicted shape comes
                back with a fresh cache and a re-recorded CUDA graph). Eager decoding keeps no cache.
            trust_remote_code: Passed to ``from_pretrained`` for models with custom code.
            learning_rate: AdamW learning rate for ``fit`` (fine-tuning on answer tokens with the head's layout).
            weight_decay: AdamW weight decay for ``fit``.
            lora_rank: > 0 wraps the LM with LoRA adapters of this rank (needs ``peft``: ``pip install
                selfens_pl[peft]``); only the adapters train. Use the same value to predict from such a checkpoint.
            lora_alpha: LoRA scaling numerator.
            lora_targets: Module names that get adapters (default: the attention projections q/k/v/o_proj).
            device_map: Spread the model over several devices in ONE process (accelerate dispatch, as the
                reference code loaded its models): ``auto`` (also ``balanced``, ``balanced_low_0``, ``sequential``) or a dict
                ``{module name: GPU index | cpu | disk}``. For models larger than one GPU; predict only. Tensor
                parallelism (``--trainer.strategy model_parallel``) is the faster alternative.
            max_memory: Budget per device for ``device_map``, e.g. ``{0: 70GiB, 1: 70GiB, cpu: 200GiB}``; what does
                not fit is offloaded (CPU, then ``offload_folder``).
            offload_folder: Directory for the weights ``device_map`` puts on ``disk``.
        """
        super().__init__()
        self.save_hyperparameters(ignore=["head"])
        self.head = head if head is not None else OriginHead()
        self.accuracy = LemmaMatchAccuracy(bidirectional=bidirectional)
        self.squad = SquadScores()
        self.val_accuracy = LemmaMatchAccuracy(bidirectional=bidirectional)
        self.lm = None
        self.tokenizer = None
        self.decoder: GreedyDecoder | None = None
        self._prompts: dict[int, PromptTokenizer] = {}

    # -- model ---------------------------------------------------------------------------------------------------
    def configure_model(self, dtype: torch.dtype | None = None) -> None:
        """Load the LM once, in ``dtype`` (default: the dtype the Trainer's precision sets, ``bf16-true`` ->
        bfloat16; the Python API passes its own, :meth:`selfens_pl.api.SelfEnsemble.load`).

        Under ``ModelParallelStrategy`` (``--trainer.strategy model_parallel``) each process builds only its slices
        of the model (tensor parallelism over the mesh's ``tensor_parallel`` dimension,
        :mod:`selfens_pl.engine.parallel`); with ``--model.device_map`` one process spreads the model over several
        devices.
        """
        if self.lm is not None:
            return
        hp = self.hparams
        mesh = getattr(self, "_device_mesh", None)  # set by ModelParallelStrategy before this hook
        tp_mesh = mesh[TP_DIM] if mesh is not None else None
        sharded = tp_mesh is not None and tp_mesh.size() > 1
        if sharded or hp.device_map is not None:
            self._check_large_model_flags(sharded)
        self.lm, self.tokenizer = load_model_and_tokenizer(  # in eval mode; fit switches it below
            hp.model, dtype=dtype or torch.get_default_dtype(), trust_remote_code=hp.trust_remote_code,
            device_map=hp.device_map, max_memory=hp.max_memory, offload_folder=hp.offload_folder,
            tp_mesh=tp_mesh, device=self.trainer.strategy.root_device if sharded else None)
        if sharded and self.trainer.is_global_zero:
            local, full = weight_bytes(self.lm)
            print(f"[selfens_pl] tensor parallel over {tp_mesh.size()} processes: {local / 2**20:.1f} MiB of the "
                  f"model's {full / 2**20:.1f} MiB of weights in each")
        if hp.device_map is not None:
            self._check_dispatched_head()
        if hp.lora_rank:
            self.lm = add_lora(self.lm, hp.lora_rank, hp.lora_alpha, hp.lora_targets)
        self.decoder = GreedyDecoder(self.lm, self.tokenizer, hp.max_new_tokens, hp.stop, hp.share_prefix,
                                     hp.compile, cache_lengths=hp.cache_lengths)
        trainer = self._trainer
        if trainer is not None and trainer.state.fn == "fit":
            # loaded in eval mode (for answering); fit trains in train mode (dropout and any train-only behaviour
            # on), before Lightning's fit loop starts; its validation switches to eval mode and back itself
            self.lm.train()

    def _check_large_model_flags(self, sharded: bool) -> None:
        """One clear error for what a split model (tensor parallel or device_map) does not do: fine-tuning, LoRA."""
        what = "--trainer.strategy model_parallel" if sharded else f"--model.device_map={self.hparams.device_map!r}"
        trainer = self._trainer
        if trainer is not None and trainer.state.fn == "fit":
            raise UserError(f"{what} serves predict (and validate) only; fine-tune with --trainer.strategy ddp")
        if self.hparams.lora_rank:
            raise UserError(f"{what} cannot be combined with --model.lora_rank")

    def _check_dispatched_head(self) -> None:
        """FlexAttention's BlockMask reads its segment ids on the device it was built on: a model dispatched over
        several GPUs runs FlexFusion with the dense mask only."""
        devices = execution_devices(self.lm)
        backend = getattr(self.head, "resolve_backend", None)
        if isinstance(self.head, FlexFusion) and len(devices) > 1 and \
                backend(execution_device(self.lm.get_input_embeddings())) == "flex":
            raise UserError(f"--model.head.init_args.backend={self.head.backend} runs FlexAttention, which cannot "
                             f"run on a model dispatched over {len(devices)} devices by --model.device_map: use "
                             "--model.head.init_args.backend dense")

    def _apply(self, fn, recurse=True):
        # A model dispatched by --model.device_map stays where accelerate placed it (its hooks move the activations):
        # Lightning's model_to_device and precision conversion would otherwise pull every layer onto one device.
        if getattr(self, "lm", None) is None or not is_dispatched(self.lm):
            return super()._apply(fn, recurse)
        children = dict(self._modules)
        del self._modules["lm"]
        try:
            return super()._apply(fn, recurse)
        finally:
            self._modules.clear()
            self._modules.update(children)

    def prompts(self, template: PromptTemplate) -> PromptTokenizer:
        """Prompt tokenizer for ``template``, cached so the shared prefix is tokenised once per run."""
        key = id(template)
        if key not in self._prompts:
            self._prompts[key] = PromptTokenizer(self.tokenizer, template)
        return self._prompts[key]

    # -- prediction ----------------------------------------------------------------------------------------------
    def answer(self, groups: list[dict], template: PromptTemplate) -> list[dict]:
        """Answer ``groups`` with the head; no scoring. Usable outside a Trainer (after :meth:`configure_model`)."""
        self.configure_model()
        return self.head.generate(self.decoder, self.prompts(template), groups)

    def predict_step(self, batch: dict, batch_idx: int = 0) -> list[dict]:
        records = self.answer(batch["groups"], batch["template"])
        if self.hparams.score:
            self.score(records)
        return records

    def score(self, records: list[dict]) -> None:
        require_answers(records, "(give answers, or run with --model.score=false)")
        for rec in records:
            if "choice" in rec:  # multiple choice (ChoiceHead): right by the chosen index, not by its text
                score_choice(rec)
                continue
            rec["correct"] = self.accuracy.match(rec["prediction"], rec["answers"])
            score_oracles(rec, self.accuracy.match)  # a rescoring record: any candidate / member answer right
        predictions = [r["prediction"] for r in records]
        answers = [r["answers"] for r in records]
        self.accuracy.update(predictions, answers, [r["correct"] for r in records])
        self.squad.update(predictions, answers)

    def on_predict_epoch_start(self) -> None:
        self.accuracy.reset()
        self.squad.reset()

    def compute_scores(self) -> dict[str, float]:
        """Accuracy, EM and F1 as fractions in [0, 1] (``summary.json``'s unit), reduced across processes."""
        if not self.hparams.score:
            return {}
        squad = self.squad.compute()
        return {"accuracy": float(self.accuracy.compute()), "exact_match": float(squad["exact_match"]) / 100,
                "f1": float(squad["f1"]) / 100}

    # -- fine-tuning ---------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Before ``fit`` loads the model (:meth:`configure_model` runs after this hook): a head without a training
        loss (vote, rerank, cascade) is refused here, naming ``--model.head``, so no step trains anything else."""
        if stage == "fit":
            check_trainable(self.head)

    def training_step(self, batch: dict, batch_idx: int = 0) -> torch.Tensor:
        """Cross-entropy of the head's fused prediction of the gold answer (see :mod:`selfens_pl.lit.training`)."""
        loss = answer_loss(self.lm, self.tokenizer, self.head, self.prompts(batch["template"]), batch["groups"],
                           self.hparams.stop)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["groups"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int = 0) -> None:
        """Generate with the head exactly as predict does and score with the same lemma-match rule."""
        records = self.answer(batch["groups"], batch["template"])
        require_answers(records, "(validation data needs answers)")
        self.val_accuracy.update([r["prediction"] for r in records], [r["answers"] for r in records])
        self.log("val/accuracy", self.val_accuracy, prog_bar=True, batch_size=len(records))

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.hparams.learning_rate, weight_decay=self.hparams.weight_decay)


def require_answers(records: list[dict], hint: str) -> None:
    """One clear error naming the first record that has no gold answers to score against."""
    for rec in records:
        if not rec.get("answers"):
            raise UserError(f"record {rec['id']!r} has no answers to score against {hint}")


def add_lora(model, rank: int, alpha: float, targets: list[str] | None):
    """Wrap ``model`` with LoRA adapters (peft); the base weights are frozen."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as err:
        raise UserError(f"--model.lora_rank={rank} needs peft: pip install 'selfens_pl[peft]'") from err
    targets = targets or ["q_proj", "k_proj", "v_proj", "o_proj"]
    return get_peft_model(model, LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0,
                                            task_type="CAUSAL_LM"))
