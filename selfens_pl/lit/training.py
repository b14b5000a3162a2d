"""Fine-tuning on answer tokens with the layout the head uses at inference.

The gold answer (``" " + answers[0] + stop``) is appended to exactly what the head feeds the model when it answers,
and the loss is the cross-entropy of the *fused* prediction of each answer token:

* ``origin`` (``OriginHead``): the first paraphrase of each group, ordinary causal LM loss on the answer;
* ``members`` (``PerPromptHead``): every paraphrase a row of its own, the same loss over all of them;
* ``fused`` (``LogitFusion``): the ``n`` rows of a group are fused with the head's rule at every answer position;
* ``flex`` (``FlexFusion``): one fused sequence per group (its mask and positions); the first answer token comes from
  the fused final-token logits of the paraphrases, later ones from the generated-token positions that see everything.

The loss is chosen by the head's :attr:`~selfens_pl.heads.base.FusionHead.training_loss`, never by its class: a head
with none (vote, rerank, cascade: they choose among answers, which no loss trains; or a head added later) is refused
before any step (:func:`check_trainable`), so ``fit`` never optimises another head's loss in its place.

Everything runs through the dense boolean mask (SDPA), which is differentiable on every device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfens_pl.data.demos import num_blocks
from selfens_pl.engine.attention import GENERATED, PAD, dense_mask
from selfens_pl.engine.decoding import decoder_stack, gathered_logits
from selfens_pl.engine.fusion import WEIGHTED, fuse_logits
from selfens_pl.errors import InternalError, UserError
from selfens_pl.heads import FlexFusion
from selfens_pl.heads.base import FusionHead, confidence_weights
from selfens_pl.heads.flex import build_layout
from selfens_pl.heads.logit import share_tensor

#: The values of ``FusionHead.training_loss`` that :func:`answer_loss` implements (``fused`` reads the head's
#: ``fusion`` rule; ``flex`` its ``layout``, ``positions``, ``fusion`` and ``fuse_first``).
TRAINING_LOSSES = ("origin", "members", "fused", "flex")


def check_trainable(head: FusionHead) -> str:
    """``head.training_loss``, or one error naming ``--model.head`` when the head has none (``fit`` calls this before
    loading the model, so nothing trains)."""
    kind, name = head.training_loss, type(head).__name__
    if kind is None:
        raise UserError(f"fit with --model.head={name} is not supported: the head has no training loss (vote, rerank "
                        "and cascade choose among answers, which no loss trains). Fine-tune with "
                        "--model.head=PerPromptHead (it trains every paraphrase's answer), then predict from that "
                        f"checkpoint with --model.head={name}")
    if kind not in TRAINING_LOSSES:  # a head class declared a loss nobody implemented: a bug, not a user error
        raise InternalError(f"{name}.training_loss={kind!r} is none of {TRAINING_LOSSES}")
    return kind


def answer_ids(tokenizer, group: dict, stop: str | None) -> list[int]:
    if not group.get("answers"):
        raise UserError(f"record {group['id']!r} has no answers to train on")
    return tokenizer(" " + group["answers"][0] + (stop or ""), add_special_tokens=False)["input_ids"]


def _pack(sequences, device):
    """Left-pad ``(tokens, segments, positions)`` triples into ``[r, s]`` tensors."""
    width = max(len(t) for t, _, _ in sequences)
    ids = torch.zeros((len(sequences), width), dtype=torch.long)
    seg = torch.full((len(sequences), width), PAD, dtype=torch.long)
    pos = torch.zeros((len(sequences), width), dtype=torch.long)
    for r, (t, s, p) in enumerate(sequences):
        off = width - len(t)
        ids[r, off:], seg[r, off:], pos[r, off:] = torch.tensor(t), torch.tensor(s), torch.tensor(p)
    return ids.to(device), seg.to(device), pos.to(device), width


def _hidden(model, ids, seg, pos):
    out = decoder_stack(model)(input_ids=ids, attention_mask=dense_mask(seg), position_ids=pos, use_cache=False)
    return out.last_hidden_state


def _labels(answers: list[list[int]], device) -> torch.Tensor:
    width = max(len(a) for a in answers)
    labels = torch.full((len(answers), width), -100, dtype=torch.long)
    for g, a in enumerate(answers):
        labels[g, : len(a)] = torch.tensor(a)
    return labels.to(device)


def _loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of fused log-scores ``[g, a, V]`` (:mod:`selfens_pl.engine.fusion`: the distribution is their
    softmax; ``max`` can hold ``log 0``, clamped so an unreachable label costs a large finite loss)."""
    logp = scores.log_softmax(-1).clamp(min=-1e4)
    return F.nll_loss(logp.flatten(0, 1), labels.flatten(), ignore_index=-100)


def answer_loss(model, tokenizer, head, prompts, groups: list[dict], stop: str | None) -> torch.Tensor:
    """Mean cross-entropy of the head's fused prediction of each gold answer token (the loss its ``training_loss``
    names)."""
    kind = check_trainable(head)
    head.check_groups(groups)
    if any(num_blocks(g) > 1 for g in groups):
        raise UserError("fit with --data.demo_blocks > 1 is not supported (the loss asks every paraphrase with the "
                         "configured few-shot block only): fine-tune with demo_blocks 1")
    if getattr(head, "calibration", "none") != "none":
        raise UserError(f"fit with --model.head.init_args.calibration={head.calibration!r} is not supported (the "
                         "loss has no content-free rows): fine-tune with calibration=none, predict calibrated")
    if kind in ("fused", "flex") and len({len(g["paraphrases"]) for g in groups}) > 1:
        raise UserError(f"fit with --model.head={type(head).__name__} needs groups of equal size (record "
                         f"{groups[0]['id']!r} has {len(groups[0]['paraphrases'])} paraphrases, others differ): set "
                         "--data.num_paraphrases")
    device = model.get_output_embeddings().weight.device
    answers = [answer_ids(tokenizer, g, stop) for g in groups]
    if kind == "flex":
        return _flex_loss(model, head, prompts, groups, answers, device)
    fused = kind == "fused"
    rows, row_answers = [], []
    for group, ans in zip(groups, answers):
        paraphrases = group["paraphrases"][:1] if kind == "origin" else group["paraphrases"]
        for paraphrase in paraphrases:
            prompt = prompts.prompt_ids(paraphrase)
            tokens = prompt + ans[:-1]
            rows.append((tokens, [0] * len(prompt) + [GENERATED] * (len(ans) - 1), list(range(len(tokens)))))
            row_answers.append((len(prompt), ans))
    ids, seg, pos, width = _pack(rows, device)
    a_max = max(len(a) for a in answers)
    # the logits at (last prompt token + j) predict answer token j; positions past a row's answer are clamped
    index = torch.tensor([[width - len(t) + min(p - 1 + j, len(t) - 1) for j in range(a_max)]
                          for (t, _, _), (p, _) in zip(rows, row_answers)], device=device)
    logits = gathered_logits(model, _hidden(model, ids, seg, pos), index)  # [r, a, V]
    if not fused:
        return _loss(logits, _labels([a for _, a in row_answers], device))
    n = len(groups[0]["paraphrases"])
    g, a, v = len(groups), a_max, logits.shape[-1]
    per_position = logits.reshape(g, n, a, v).transpose(1, 2).reshape(g * a, n, v)
    weights = None
    if head.fusion in WEIGHTED:
        weights = confidence_weights(groups, head.fusion, device).repeat_interleave(a, dim=0)
    elif (shares := share_tensor(groups, head.origin_share, n, device)) is not None:  # fuses as the head predicts
        weights = shares.repeat_interleave(a, dim=0)
    scores = fuse_logits(per_position, head.fusion, weights).reshape(g, a, v)
    return _loss(scores, _labels(answers, device))


def _flex_loss(model, head: FlexFusion, prompts, groups, answers, device) -> torch.Tensor:
    seqs, ends, starts = [], [], []
    for group, ans in zip(groups, answers):
        lay = build_layout(prompts, group["paraphrases"], head.layout, head.positions)
        gen = ans[:-1]
        seqs.append((lay.tokens + gen, lay.segments + [GENERATED] * len(gen),
                     lay.positions + list(range(lay.next_position, lay.next_position + len(gen)))))
        ends.append(lay.ends)
        starts.append(len(lay.tokens))
    ids, seg, pos, width = _pack(seqs, device)
    hidden = _hidden(model, ids, seg, pos)
    offsets = [width - len(t) for t, _, _ in seqs]
    seg_ends = torch.tensor([[o + e for e in es] for o, es in zip(offsets, ends)], device=device)
    weights = confidence_weights(groups, head.fusion, device) if head.fusion in WEIGHTED else None
    first = head.fuse_first(gathered_logits(model, hidden, seg_ends), weights)  # [g, V]
    a_max = max(len(a) for a in answers)
    labels = _labels(answers, device)
    loss = _loss(first[:, None], labels[:, :1])
    if a_max == 1:
        return loss
    # answer token j >= 1 is predicted at the position of answer token j-1 (a generated token: it sees everything)
    index = torch.tensor([[o + min(s + j, len(t) - 1) for j in range(a_max - 1)]
                          for o, s, (t, _, _) in zip(offsets, starts, seqs)], device=device)
    rest = gathered_logits(model, hidden, index)
    n_first, n_rest = 1 * len(groups), int((labels[:, 1:] != -100).sum())
    rest_loss = _loss(rest, labels[:, 1:])
    return (loss * n_first + rest_loss * n_rest) / (n_first + n_rest)
