"""Alternative first tokens: the answers an encoded prompt gives when it starts with its 2nd, 3rd, ... most likely
token instead of its most likely one, each continued greedily.

Rank ``r`` of a prompt is the ``r``-th token of its next-token logits at the prompt's end (``EncodedPrompts.logits``)
in descending order, ties to the lower token id: rank 0 is the greedy token (``argmax``, which returns the first
maximum), so the ranks are exactly the order repeated ``argmax`` with each pick masked out gives. After its first
token an alternative decodes as any member does (greedy, the decoder's stop string, EOS and ``max_new_tokens``).
Answer-level rescoring (:class:`~selfens_pl.heads.rerank.RerankHead` with ``first_tokens``) adds them to its
candidates.
"""

from __future__ import annotations

import torch

from selfens_pl.engine.decode_batches import EncodedPrompts, Generation
from selfens_pl.engine.fusion import no_fusion, token_logprob
from selfens_pl.errors import InternalError, UserError


def rank_tokens(logits: torch.Tensor, ranks: int) -> torch.Tensor:
    """``logits [g, V]`` -> ``[g, ranks]``: each row's tokens of ranks ``0 .. ranks-1`` (descending logit, ties to
    the lower id: rank 0 is ``argmax``). Repeated argmax, so memory stays ``[g, V]`` whatever the vocabulary."""
    scores = logits.clone()
    out = []
    for _ in range(ranks):
        token = scores.argmax(-1, keepdim=True)  # [g, 1]
        out.append(token)
        scores.scatter_(1, token, float("-inf"))
    return torch.cat(out, dim=1)


def decode_alternatives(decoder, encoded: EncodedPrompts, rows: list[int], k: int) -> list[list[Generation]]:
    """``[i][r-1]``: the answer of encoded prompt ``rows[i]`` that starts with its rank-``r`` first token, for
    ``r = 1 .. k-1`` (rank 0, the greedy answer, is decoded elsewhere), continued greedily.

    ONE batched ``decoder.decode_n_tokens`` over every (row, rank) pair: the rows repeated ``k-1`` times
    (``encoded.batch``: no prefill), each pair's rank riding in ``batch.weights`` ``[(len(rows) * (k-1)), 1]``
    (float), which the first token's fusion reads to keep only that rank's token of ``logits [g, 1, V]``; later
    tokens are plain greedy (``no_fusion``, no step weights). Works eagerly and compiled (the first token is picked
    before the decoder pads a compiled bucket; only the later steps run compiled).

    Each answer's ``logprobs[0]`` is its first token's log-probability under the prompt's own next-token
    distribution (``token_logprob`` of ``encoded.logits``, as the greedy answer's first token), not under the
    one-token distribution that forced it; later entries are greedy's. ``k = 1``: ``[[]] * len(rows)``, nothing
    decoded.
    """
    if k < 1:
        raise InternalError(f"decode_alternatives needs k >= 1, got {k}")
    if k == 1 or not rows:
        return [[] for _ in rows]
    vocab = int(encoded.logits.shape[-1])
    if k > vocab:
        raise UserError(f"--model.head.init_args.first_tokens={k}: the vocabulary has only {vocab} tokens")
    device = decoder.device
    flat = torch.tensor([row for row in rows for _ in range(1, k)], device=device)
    batch = encoded.batch(flat)
    batch.weights = torch.arange(1, k, device=device, dtype=torch.float32).repeat(len(rows))[:, None]
    batch.step_weights = None

    def forced(logits, weights=None, valid=None):
        """``logits [g, 1, V]``, ``weights [g, 1]`` ranks -> ``[g, V]``: ``-inf`` except at each group's rank-r
        token, which keeps its log-probability."""
        logp = logits[:, 0].log_softmax(-1)
        token = rank_tokens(logits[:, 0], k).gather(1, weights[:, :1].long())  # [g, 1]
        return torch.full_like(logp, float("-inf")).scatter(1, token, logp.gather(1, token))

    gens = decoder.decode_n_tokens(batch, forced, no_fusion)
    first = torch.tensor([gen.token_ids[0] if gen.token_ids else gen.eos_token for gen in gens], device=device)
    true = token_logprob(encoded.logits[flat.to(encoded.logits.device)], first.to(encoded.logits.device)).tolist()
    for gen, logprob in zip(gens, true):
        if gen.logprobs:  # an answer ended by EOS at once records no token (and no log-probability)
            gen.logprobs[0] = logprob
    return [gens[i * (k - 1):(i + 1) * (k - 1)] for i in range(len(rows))]
