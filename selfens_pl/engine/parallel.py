"""Models larger than one device: tensor parallelism across processes, and ``device_map`` dispatch in one process.

**Tensor parallelism** (``--trainer.strategy model_parallel``, Lightning's ``ModelParallelStrategy``): every process
of a tensor-parallel group holds a slice of every layer. The slicing is the model's own Hugging Face plan
(``model._tp_plan``: ``base_model_tp_plan`` of its config plus the LM head's entry), translated to PyTorch's
``ColwiseParallel`` / ``RowwiseParallel`` and applied with ``torch.distributed.tensor.parallel.parallelize_module``
on the mesh's ``tensor_parallel`` dimension. Column-parallel projections (q/k/v, gate/up) return this process's
heads / columns as plain local tensors, row-parallel ones (o, down) all-reduce back to the full hidden state, the LM
head gathers the full vocabulary: so the decoder, the attention masks and the fusion rules see plain tensors, and
the KV cache holds this process's heads only. The weights are never materialised whole: the model is built on the
meta device, sharded, and each process reads only its slices of the safetensors checkpoint
(``torch.distributed.checkpoint.HuggingFaceStorageReader``).

**device_map** (``--model.device_map auto``, a dict, ``--model.max_memory``): one process, the layers spread over
several devices (GPUs, then CPU, then disk) by accelerate's dispatch hooks, as the reference code loaded its models.
"""

from __future__ import annotations

from pathlib import Path

import torch

from selfens_pl.errors import UserError

#: The strategy flag value this package registers for tensor parallelism (``ModelParallelStrategy``).
MODEL_PARALLEL = "model_parallel"


def register_strategy() -> None:
    """``--trainer.strategy model_parallel``: Lightning's ``ModelParallelStrategy`` with every process in one
    tensor-parallel group (idempotent). Data x tensor parallelism: ``--trainer.strategy.class_path
    ModelParallelStrategy --trainer.strategy.init_args.data_parallel_size D
    --trainer.strategy.init_args.tensor_parallel_size T``."""
    from lightning.pytorch.strategies import ModelParallelStrategy, StrategyRegistry

    if MODEL_PARALLEL not in StrategyRegistry:
        StrategyRegistry.register(MODEL_PARALLEL, ModelParallelStrategy,
                                  description="tensor parallelism over all devices (selfens_pl)",
                                  data_parallel_size=1)


# -- the plan ------------------------------------------------------------------------------------------------------
def _style(name: str):
    """A Hugging Face plan style name -> the PyTorch ``ParallelStyle`` with the same layouts, ``None`` for styles
    that keep the weight whole at inference, ``KeyError`` for styles without a PyTorch equivalent."""
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    styles = {
        # weight Shard(0): this process's output features (heads, MLP columns) as a plain local tensor
        "colwise": lambda: ColwiseParallel(),
        # the same, then all-gathered: the LM head's full vocabulary on every process
        "colwise_gather_output": lambda: ColwiseParallel(output_layouts=Replicate()),
        "colwise_rep": lambda: ColwiseParallel(output_layouts=Replicate()),
        # weight Shard(1): local input features in, partial sums all-reduced to the full output
        "rowwise": lambda: RowwiseParallel(),
        "rowwise_rep": lambda: RowwiseParallel(input_layouts=Replicate()),
        "rowwise_split_input": lambda: RowwiseParallel(input_layouts=Replicate()),
        # vocabulary-parallel embedding: each process looks up its rows, the partial lookups are summed
        "embedding_rowwise": lambda: RowwiseParallel(input_layouts=Replicate()),
        "embedding_colwise": lambda: ColwiseParallel(output_layouts=Replicate()),
        # replicated weights whose *gradients* need an all-reduce (Qwen3's per-head norms): nothing at inference
        "replicated_with_grad_allreduce": lambda: None,
        "replicate": lambda: None,
    }
    return styles[name]()


def hf_tp_plan(model) -> dict[str, str]:
    """The model's own tensor-parallel plan, ``{module pattern: style}`` with ``*`` for layer numbers."""
    plan = dict(getattr(model, "_tp_plan", None) or {})
    if not plan:  # older transformers: the config's base-model plan, prefixed with the base model's attribute
        prefix = getattr(model, "base_model_prefix", "model")
        plan = {f"{prefix}.{k}": v for k, v in (getattr(model.config, "base_model_tp_plan", None) or {}).items()}
    return plan


def tensor_parallel_plan(model, tp_size: int) -> dict:
    """``{module pattern: ParallelStyle}`` for ``parallelize_module``, or one ``ValueError`` that says why this model
    cannot be split ``tp_size`` ways (no plan, a style PyTorch cannot apply, heads that do not divide)."""
    flag = f"--trainer.strategy {MODEL_PARALLEL} with {tp_size} tensor-parallel processes"
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    plan = hf_tp_plan(model)
    if not plan:
        raise UserError(f"{flag}: {type(model).__name__} has no tensor-parallel plan in transformers "
                         "(base_model_tp_plan): use --model.device_map auto instead")
    for attr in ("num_attention_heads", "num_key_value_heads"):
        heads = getattr(config, attr, None)
        if heads is not None and heads % tp_size:
            raise UserError(f"{flag}: the model has {attr}={heads}, which does not split into {tp_size} equal "
                             f"parts; choose a tensor-parallel size that divides it")
    styles = {}
    for pattern, name in plan.items():
        try:
            style = _style(name)
        except KeyError:
            raise UserError(f"{flag}: the model's plan shards {pattern!r} with the style {name!r}, which selfens_pl "
                             "cannot apply (it applies colwise, rowwise and embedding styles): use "
                             "--model.device_map auto instead") from None
        if style is not None:
            styles[pattern] = style
    return styles


# -- building the sharded model ------------------------------------------------------------------------------------
def checkpoint_dir(path: str) -> Path:
    """A local directory holding the model's ``*.safetensors`` (a hub id is downloaded into the HF cache first)."""
    local = Path(path).expanduser()
    if not local.is_dir():
        from huggingface_hub import snapshot_download

        local = Path(snapshot_download(path, allow_patterns=["*.json", "*.safetensors"]))
    if not any(local.glob("*.safetensors")):
        raise UserError(f"--trainer.strategy {MODEL_PARALLEL} reads each process's slices of the weights from "
                         f"*.safetensors files, and {local} has none: convert the checkpoint to safetensors, or use "
                         "--model.device_map auto")
    return local


def load_tensor_parallel(path: str, tp_mesh, device: torch.device, dtype: torch.dtype, attn_implementation: str,
                         trust_remote_code: bool = False):
    """The causal LM at ``path`` split over ``tp_mesh`` (1-D), on ``device`` (this process's), in eval mode.

    Built on the meta device (no process ever holds the whole model), sharded with the model's own plan, then
    filled with this process's slices of the checkpoint. Buffers computed at construction (rotary frequencies) are
    built for real and kept.
    """
    from accelerate import init_empty_weights
    from torch.distributed.checkpoint import HuggingFaceStorageReader
    from torch.distributed.checkpoint import load as dcp_load
    from torch.distributed.tensor.parallel import parallelize_module
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    local = checkpoint_dir(path)
    config = AutoConfig.from_pretrained(local, trust_remote_code=trust_remote_code)
    with init_empty_weights(include_buffers=False):  # parameters on meta, buffers computed for real
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn_implementation,
                                                 trust_remote_code=trust_remote_code)
    model.tie_weights()  # from_config skips it on the meta device
    tied = _tied_parameters(model)
    parallelize_module(model, tp_mesh, tensor_parallel_plan(model, tp_mesh.size()), src_data_rank=None)
    for head_name, embed_name in tied.items():  # re-tie: both halves were sharded the same way (vocab rows)
        _retie(model, head_name, embed_name)
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    model.to_empty(device=device)
    with torch.no_grad():
        for name, b in model.named_buffers():
            b.copy_(buffers[name])

    reader = HuggingFaceStorageReader(str(local))
    in_checkpoint = set(reader.read_metadata().state_dict_metadata)
    state = {}
    missing = []
    for name, tensor in model.state_dict().items():
        if name in in_checkpoint:
            state[name] = tensor
        elif name not in buffers and name not in tied:
            missing.append(name)
    if missing:
        raise UserError(f"--trainer.strategy {MODEL_PARALLEL}: {local} has no weights named {missing[:3]} "
                         f"({len(missing)} in all): this architecture's checkpoint is renamed on load by transformers, "
                         "which tensor parallelism reading by name cannot follow; use --model.device_map auto")
    dcp_load(state, storage_reader=reader)  # every parameter: each process reads its own slices
    if (local / "generation_config.json").is_file():  # its eos ids stop the answers, as with from_pretrained
        model.generation_config = GenerationConfig.from_pretrained(local)
    model.eval()
    return model


def _tied_parameters(model) -> dict[str, str]:
    """``{head weight name: embedding weight name}`` for parameters that share storage (tied LM head)."""
    if not getattr(model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config,
                   "tie_word_embeddings", False):
        return {}
    out_emb, in_emb = model.get_output_embeddings(), model.get_input_embeddings()
    if out_emb is None or out_emb.weight is not in_emb.weight:
        return {}
    names = {id(m): n for n, m in model.named_modules()}
    return {f"{names[id(out_emb)]}.weight": f"{names[id(in_emb)]}.weight"}


def _retie(model, head_name: str, embed_name: str) -> None:
    head = model.get_submodule(head_name.rsplit(".", 1)[0])
    embed_weight = model.get_parameter(embed_name)
    head_layout = getattr(head.weight, "placements", None), head.weight.shape
    embed_layout = getattr(embed_weight, "placements", None), embed_weight.shape
    if head_layout != embed_layout:
        raise UserError(f"--trainer.strategy {MODEL_PARALLEL}: the tied LM head {head_layout} and the embedding "
                         f"{embed_layout} are sharded differently by the model's plan")
    head.weight = embed_weight


# -- device_map dispatch (one process) -----------------------------------------------------------------------------
#: ``--model.device_map`` strategies accelerate computes from the devices' free memory (or ``--model.max_memory``).
AUTO_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


def _device_key(key):
    """``"0"`` -> ``0`` (a GPU index, as YAML or the command line may spell it); ``"cpu"`` etc. unchanged."""
    return int(key) if isinstance(key, str) and key.isdigit() else key


def dispatch_kwargs(device_map, max_memory, offload_folder) -> dict:
    """``from_pretrained`` arguments for ``--model.device_map`` / ``--model.max_memory`` / ``--model.offload_folder``,
    or one ``ValueError`` naming the flag."""
    if device_map is None:
        raise UserError("--model.max_memory budgets the devices of --model.device_map: give --model.device_map "
                         "auto (or a dict) too")
    if isinstance(device_map, str):
        if device_map not in AUTO_MAPS:
            raise UserError(f"--model.device_map={device_map!r}: choose one of {', '.join(AUTO_MAPS)} or give a "
                             "dict {module name: device}")
    elif isinstance(device_map, dict) and device_map:
        device_map = {str(k): _device_key(v) for k, v in device_map.items()}
        if "disk" in device_map.values() and not offload_folder:
            raise UserError("--model.device_map puts modules on 'disk': give --model.offload_folder DIR")
    else:
        raise UserError(f"--model.device_map={device_map!r}: give auto (or {', '.join(AUTO_MAPS[1:])}) or a dict "
                         "{module name: device}")
    kwargs = {"device_map": device_map}
    if max_memory is not None:
        if not isinstance(max_memory, dict) or not max_memory:
            raise UserError(f"--model.max_memory={max_memory!r}: give a dict {{device: size}}, e.g. "
                             "{0: 70GiB, 1: 70GiB, cpu: 200GiB}")
        kwargs["max_memory"] = {_device_key(k): v for k, v in max_memory.items()}
    if offload_folder:
        kwargs["offload_folder"] = str(offload_folder)
    return kwargs


def is_dispatched(model) -> bool:
    """Whether ``model`` was loaded with a ``device_map`` (accelerate's hooks place it; nothing may move it)."""
    return bool(getattr(model, "hf_device_map", None))


def execution_devices(model) -> set:
    """The devices a dispatched model computes on (offloaded modules run on the main device)."""
    devices = {d for d in (getattr(model, "hf_device_map", None) or {}).values() if d not in ("cpu", "disk")}
    return devices or {"cpu"}


def execution_device(module) -> torch.device:
    """Where ``module`` computes: its accelerate hook's execution device when dispatched (an offloaded module's
    weights sit on the meta device between calls), else its first parameter's device."""
    hook = getattr(module, "_hf_hook", None)
    for h in getattr(hook, "hooks", None) or ([hook] if hook is not None else []):
        device = getattr(h, "execution_device", None)
        if device is not None:
            return torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    return next(module.parameters()).device


def align_dispatched_outputs(model) -> None:
    """Send the outputs of the decoder stack and of the LM head to the input embedding's device.

    The decoder calls the stack and the head itself (not the model's top-level forward, whose hook does this), and
    keeps its masks, positions and fusion weights on the input embedding's device (``GreedyDecoder.device``): the
    last hidden state and the logits must come back there when the last layers or the head sit elsewhere.
    """
    from accelerate.hooks import ModelHook, add_hook_to_module
    from accelerate.utils import send_to_device

    class OutputsTo(ModelHook):
        def __init__(self, device):
            self.device = device

        def post_forward(self, module, output):
            return send_to_device(output, self.device, skip_keys=["past_key_values", "cache"])

    device = execution_device(model.get_input_embeddings())
    stack = model.get_decoder() if hasattr(model, "get_decoder") else model.base_model
    for module in (stack, model.get_output_embeddings()):
        add_hook_to_module(module, OutputsTo(device), append=True)


def weight_bytes(model) -> tuple[int, int]:
    """``(bytes of weights this process holds, bytes of the whole model)``; they differ under tensor parallelism."""
    local = full = 0
    for p in model.parameters():
        shard = p.to_local() if hasattr(p, "to_local") else p
        local += shard.numel() * shard.element_size()
        full += p.numel() * p.element_size()
    return local, full
