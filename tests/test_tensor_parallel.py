"""Tensor parallelism: one model split over 2 CPU processes (gloo) answers exactly as one process does.

* end to end: ``predict --trainer.strategy model_parallel --trainer.devices 2`` (Lightning's ModelParallelStrategy)
  gives the records and summary of a one-process run for origin, and for LogitFusion avg with 4 processes as 2
  data-parallel replicas x 2 tensor-parallel ranks;
* the plan itself, driven with ``torch.distributed`` (gloo): local heads and columns, a KV cache holding half the
  KV heads, logits equal to the whole model's, every head (FlexFusion, dense and with FlexAttention's BlockMask,
  included: the end-to-end runs need not repeat it), a tied LM head;
* the errors: a plan that cannot be applied, a checkpoint that cannot be read by slices, ``--trainer.strategy fsdp``.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_ddp import read_jsonl, subprocess_env, write_config, write_groups

from selfens_pl.engine.parallel import tensor_parallel_plan
from selfens_pl.lit.cli import build_cli
from selfens_pl.lit.preflight import check_strategy
from selfens_pl.lit.writer import PREDICTIONS, SUMMARY

N_GROUPS = 5
HEADS = {
    "origin": None,
    "avg": {"class_path": "selfens_pl.heads.LogitFusion", "init_args": {"method": "avg"}},
}


def predict_cmd(config: Path, output_dir: Path, *strategy: str) -> list[str]:
    return [sys.executable, "-m", "selfens_pl", "predict", "--config", str(config), "--output_dir", str(output_dir),
            "--trainer.accelerator", "cpu", *strategy]


def test_model_parallel_matches_one_process(tmp_path, tiny_model_dir, monkeypatch):
    write_groups(tmp_path / "groups.jsonl", N_GROUPS)
    configs = {name: write_config(tmp_path / f"{name}.yaml", tiny_model_dir, tmp_path / "groups.jsonl", head)
               for name, head in HEADS.items()}
    # name -> (config, output dir, strategy flags): origin split in 2; avg as 2 data-parallel replicas of a model
    # split in 2 (every head splits the same way: the plan tests below run them all)
    runs = {"origin": (configs["origin"], tmp_path / "tp_origin",
                       ["--trainer.strategy", "model_parallel", "--trainer.devices", "2"])}
    runs["avg_dp2_tp2"] = (configs["avg"], tmp_path / "dp2_tp2", [
        "--trainer.strategy.class_path", "ModelParallelStrategy", "--trainer.strategy.init_args.data_parallel_size",
        "2", "--trainer.strategy.init_args.tensor_parallel_size", "2", "--trainer.devices", "4"])
    procs = {name: subprocess.Popen(predict_cmd(config, out, *flags), cwd=tmp_path, env=subprocess_env(), text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name, (config, out, flags) in runs.items()}
    try:
        # meanwhile the one-process runs, in this process
        monkeypatch.setattr(sys, "argv", ["selfens_pl"])
        for name in HEADS:
            build_cli(["predict", "--config", str(configs[name]), "--output_dir", str(tmp_path / f"one_{name}")])
        outputs = {name: proc.communicate(timeout=600) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            proc.kill()
    correct = 0
    for name, (_, out_dir, _) in runs.items():
        out, err = outputs[name]
        assert procs[name].returncode == 0, (out + err)[-4000:]
        # configure_model split the model: each process holds about half of the weights
        assert "[selfens_pl] tensor parallel over 2 processes" in out, out[-2000:]
        one_dir = tmp_path / f"one_{name.split('_dp2')[0]}"
        one, split = read_jsonl(one_dir / PREDICTIONS), read_jsonl(out_dir / PREDICTIONS)
        assert [r["id"] for r in split] == sorted(r["id"] for r in one)
        # same records: generations token for token, predictions, correct; each answer's mean_prob (the split
        # model sums its matmuls in another order) to float precision
        assert [{k: v for k, v in r.items() if k != "mean_prob"} for r in split] == \
            [{k: v for k, v in r.items() if k != "mean_prob"} for r in one], name
        assert [r["mean_prob"] for r in split] == pytest.approx([r["mean_prob"] for r in one], rel=1e-4), name
        correct += sum(r["correct"] for r in one)
        s_one, s_split = json.loads((one_dir / SUMMARY).read_text()), json.loads((out_dir / SUMMARY).read_text())
        for key in ("n", "records", "accuracy", "exact_match", "f1"):
            assert s_split[key] == pytest.approx(s_one[key]), (name, key)
        assert "accuracy" not in s_split["run"], name  # synced metrics equal the merged file's (writer-checked)
        # only the first process of each tensor-parallel group writes; groups split over the data-parallel replicas
        expected = [3, 0, 2, 0] if "dp2" in name else [N_GROUPS, 0]
        assert s_split["run"]["n_per_process"] == expected, name
        assert not list(out_dir.glob("predictions.rank*.jsonl"))
    assert correct > 0  # some answers are right, so equal accuracies mean something


# -- the plan, driven by torch.distributed directly -----------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _heads():
    from selfens_pl.heads import FlexFusion, LogitFusion, OriginHead, PerPromptHead

    return {"origin": OriginHead(), "per_prompt": PerPromptHead(), "avg": LogitFusion("avg"),
            "max": LogitFusion("max"), "flex_dense": FlexFusion(layout="shared_prefix", backend="dense"),
            "flex_concat_flex": FlexFusion(layout="concat", backend="flex", compile=False)}


def _answer(model, tokenizer, template, groups) -> dict:
    """Every head's generations, the first layer's cached key heads and the prefill logits (as lists: picklable)."""
    from selfens_pl.data.prompts import PromptTokenizer
    from selfens_pl.engine.batches import prompt_batch
    from selfens_pl.engine.decoding import GreedyDecoder

    decoder = GreedyDecoder(model, tokenizer, max_new_tokens=8, stop=None)
    prompts = PromptTokenizer(tokenizer, template)
    out = {name: [r["generation"] for r in head.generate(decoder, prompts, groups)] for name, head in _heads().items()}
    batch = prompt_batch(decoder, prompts, [(g, g["paraphrases"][0]) for g in groups])
    cache = decoder.new_cache(batch.input_ids.shape[0], batch.pad_mask.shape[1])
    logits = decoder.prefill(batch, cache)
    out["cached_kv_heads"] = cache.keys[0].shape[1]
    out["logits"] = logits.tolist()
    return out


def _tp_worker(rank: int, world: int, port: int, model_dir: str, template, groups, queue) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        queue.put((rank, _split_answers(world, model_dir, template, groups)))
    except Exception:  # reported to the test rather than left for its timeout
        import traceback

        queue.put((rank, {"error": traceback.format_exc()}))
    finally:
        dist.destroy_process_group()


def _split_answers(world: int, model_dir: str, template, groups) -> dict:
    from torch.distributed.device_mesh import init_device_mesh

    from selfens_pl.engine.models import load_model_and_tokenizer

    mesh = init_device_mesh("cpu", (world,), mesh_dim_names=("tensor_parallel",))
    model, tokenizer = load_model_and_tokenizer(model_dir, tp_mesh=mesh, device=torch.device("cpu"))
    out = _answer(model, tokenizer, template, groups)
    attn = model.model.layers[0].self_attn
    out["local_rows"] = {name: tuple(getattr(attn, name).weight.to_local().shape)
                         for name in ("q_proj", "k_proj", "o_proj")}
    out["lm_head_rows"] = model.lm_head.weight.to_local().shape[0]
    out["tied"] = model.lm_head.weight is model.model.embed_tokens.weight
    return out


def run_split(model_dir: Path, template, groups, world: int = 2) -> list[dict]:
    ctx = torch.multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_tp_worker, args=(r, world, port, str(model_dir), template, groups, queue))
             for r in range(world)]
    for p in procs:
        p.start()
    try:
        results = dict(queue.get(timeout=300) for _ in procs)
        for rank, out in results.items():
            assert "error" not in out, f"rank {rank}: {out.get('error')}"
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    return [results[r] for r in range(world)]


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied_lm_head"])
def test_plan_splits_heads_and_matches_the_whole_model(tmp_path, tiny_model_dir, template, groups, tied):
    from tiny_models import build_tiny_model

    from selfens_pl.engine.models import load_model_and_tokenizer

    model_dir = build_tiny_model(tmp_path / "tied", tie_word_embeddings=True) if tied else tiny_model_dir
    model, tokenizer = load_model_and_tokenizer(str(model_dir))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        whole = _answer(model, tokenizer, template, groups)
    finally:
        torch.set_num_threads(threads)
    split = run_split(model_dir, template, groups)
    cfg = model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    for rank, out in enumerate(split):
        # attention runs on local heads: half the q and kv heads, the cache holds half the kv heads
        assert out["local_rows"] == {"q_proj": (cfg.num_attention_heads // 2 * head_dim, cfg.hidden_size),
                                     "k_proj": (cfg.num_key_value_heads // 2 * head_dim, cfg.hidden_size),
                                     "o_proj": (cfg.hidden_size, cfg.num_attention_heads // 2 * head_dim)}, rank
        assert out["cached_kv_heads"] == cfg.num_key_value_heads // 2 == whole["cached_kv_heads"] // 2
        assert out["lm_head_rows"] == cfg.vocab_size // 2  # the LM head holds half the vocabulary ...
        assert out["tied"] is tied  # ... the same shard as the embedding when they are tied
        # ... and gathers it: full logits, equal to the whole model's
        torch.testing.assert_close(torch.tensor(out["logits"]), torch.tensor(whole["logits"]), atol=1e-4, rtol=1e-4)
        for name in _heads():
            assert out[name] == whole[name], (rank, name)
    assert all(whole[name] for name in _heads())


# -- errors ---------------------------------------------------------------------------------------------------------
def test_plans_that_cannot_be_applied(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert set(tensor_parallel_plan(model, 2)) == set(model._tp_plan)
    with pytest.raises(ValueError, match=r"num_key_value_heads=2, which does not split into 4 equal parts"):
        tensor_parallel_plan(model, 4)
    model._tp_plan = {**model._tp_plan, "model.layers.*.mlp.gate_up_proj": "packed_colwise"}
    with pytest.raises(ValueError, match=r"style 'packed_colwise'.*--model.device_map auto"):
        tensor_parallel_plan(model, 2)
    model._tp_plan = {}
    model.config.base_model_tp_plan = None
    with pytest.raises(ValueError, match=r"has no tensor-parallel plan.*--model.device_map auto"):
        tensor_parallel_plan(model, 2)


def test_fsdp_names_the_supported_alternatives():
    """(On the CPU Lightning itself refuses fsdp first, asking for a GPU; on a GPU predict gets this error.)"""
    from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, ModelParallelStrategy, SingleDeviceStrategy

    for supported in (ModelParallelStrategy(), DDPStrategy(), SingleDeviceStrategy("cpu")):
        check_strategy(supported)
    with pytest.raises(ValueError, match=r"--trainer.strategy=fsdp is not supported by predict") as err:
        check_strategy(FSDPStrategy())
    for alternative in ("--trainer.strategy ddp", "--trainer.strategy model_parallel", "--model.device_map auto"):
        assert alternative in str(err.value)
    assert "\n" not in str(err.value)


@pytest.fixture
def one_process_group():
    """A gloo group of one process, in this process (a 1-process mesh runs the loading code of any size)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1,), mesh_dim_names=("tensor_parallel",))
    finally:
        dist.destroy_process_group()


def test_checkpoints_it_cannot_read_by_slice(tmp_path, tiny_model_dir, one_process_group):
    import shutil

    from safetensors.torch import load_file, save_file

    from selfens_pl.engine.attention import ATTN_IMPLEMENTATION, register_attention
    from selfens_pl.engine.parallel import load_tensor_parallel

    register_attention()

    def load(path):
        return load_tensor_parallel(str(path), one_process_group, torch.device("cpu"), torch.float32,
                                    ATTN_IMPLEMENTATION)

    model = load(tiny_model_dir)  # the loader itself, on a mesh of one
    assert model.model.layers[0].self_attn.q_proj.weight.to_local().shape == (64, 64)
    renamed = tmp_path / "renamed"
    shutil.copytree(tiny_model_dir, renamed)
    weights = load_file(renamed / "model.safetensors")
    weights["model.layers.0.attn.q.weight"] = weights.pop("model.layers.0.self_attn.q_proj.weight")
    save_file(weights, renamed / "model.safetensors")
    with pytest.raises(ValueError, match=r"has no weights named \['model.layers.0.self_attn.q_proj.weight'\]"):
        load(renamed)
    (renamed / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"reads each process's slices of the weights from \*.safetensors"):
        load(renamed)
