"""A learned chooser: which of a group's candidate answers is right, from what the engine already computed.

Rescoring rules (:mod:`selfens_pl.scoring.rescoring`) pick a candidate with one fixed formula over the members'
sequence log-probabilities. The chooser learns how to weigh the signals instead (as LPAQA learns prompt-ensemble
weights on training facts, Jiang et al. 2020): a logistic regression (scikit-learn) over per-candidate features, fit
on grouped facts with known answers, scores each candidate; the highest wins (ties: the lowest candidate index,
i.e. the candidate first produced by the lowest member, as the rules do).

Per candidate ``c`` of a group of ``N = K x M`` members (``K`` paraphrases x ``M`` few-shot blocks, block-major) with
sequence log-probabilities ``s[m][c]`` and ``L_c`` tokens, the features (:data:`FEATURES`) are

* support: the share of members whose answer agrees with ``c`` (the lemma rule), the share of paraphrases with some
  agreeing member (any block), the share of blocks with some agreeing member (any paraphrase), whether member 0
  (origin: paraphrase 0, the standard block) answered it;
* scores: mixture (``log mean_m P_m(c)``), max, mean, mean per token, origin's ``s[0][c]``, and the mixture's margin
  over the best other candidate;
* ranks: the mean rank of ``c`` under the members' rows (0 best, divided by ``C - 1``) and the share of members that
  rank it first;
* form: ``L_c`` and whether ``c`` repeats the answer of a demonstration the group was asked with (a copied example
  answer is a known failure of few-shot prompts);
* with demonstration answers among the candidates (``RerankHead(demo_answers=True)``, :data:`DEMO_FEATURES`): the
  share of the demonstrations whose answer agrees with ``c`` (their vote) and how near the first of them is
  (``1 - i / D`` for the ``i``-th of ``D`` demonstrations, block order: with similar blocks the most similar question
  first; 0 when none agrees), so the chooser can learn when a near question's answer is worth copying.

Fit and use never mix facts: :func:`fold_choosers` assigns facts to folds by a hash of their id, and a
fact's choice comes from the chooser fit on the other folds. The fitted chooser is saved as a small JSON file
(feature names, standardisation, weights) that :class:`Chooser` loads without scikit-learn.

A chooser file also says the model it was fit with (``"model": {"name", "identity", "name_or_path"}``, written by
``python -m selfens_pl chooser``): its features are that model's scores, ranks and margins, so a head with the file
refuses another model (:meth:`Chooser.check_model`), naming the file, both models and how to fit one for the model
in use. Models are compared by :func:`model_identity` (the embedded alias and its converted cache directory, an alias
and its hub id, a hub id and its hub-cache snapshot, a relative and an absolute path to one directory are one
model). ``"model": null`` is a chooser fit with no model (hand-made weights, tests): used with any. A file without
the field (written before files recorded it) is refused: fit it again, or add the field naming its model.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from selfens_pl.errors import InternalError, UserError
from selfens_pl.jsonl import atomic_write
from selfens_pl.scoring.agreement import Lemmas
from selfens_pl.scoring.rescoring import best

FEATURES: tuple[str, ...] = (
    "support_members", "support_paraphrases", "support_blocks", "from_origin",
    "mixture", "max", "mean", "mean_token", "origin_score", "mixture_margin",
    "mean_rank", "first_rank_share", "tokens", "demo_answer",
)
DEMO_FEATURES: tuple[str, ...] = FEATURES + ("demo_share", "demo_nearest")
FORMAT = "selfens_pl.chooser/1"


def _mixture(column: list[float]) -> float:
    top = max(column)
    return top + math.log(sum(math.exp(v - top) for v in column) / len(column))


def candidate_features(predictions: list[str], candidates: list[str], table: list[list[float]], lengths: list[int],
                       k: int, demo_answers: list[str] = (), lemmas: Lemmas | None = None,
                       demo_features: bool = False) -> list[list[float]]:
    """``[C][F]`` features of each candidate (module docstring): :data:`FEATURES`, or :data:`DEMO_FEATURES` with
    ``demo_features``.

    Args:
        predictions: ``[N]`` every member's own answer, block-major (member ``m`` = paraphrase ``m % k``, block
            ``m // k``).
        candidates: ``[C]`` the distinct candidate answers.
        table: ``[N][C]`` sequence log-probability of candidate ``c`` under member ``m``.
        lengths: ``[C]`` tokens scored per candidate.
        k: paraphrases per block.
        demo_answers: answers of the demonstrations the group was asked with (any block), block order.
        demo_features: also the demonstrations' vote and nearest agreeing demonstration.
    """
    n, c = len(predictions), len(candidates)
    if n == 0 or n % k or len(table) != n or any(len(row) != c for row in table) or len(lengths) != c:
        raise InternalError(f"candidate_features: {n} members, k={k}, a {len(table)}-row table and {len(lengths)} "
                            f"lengths for {c} candidates do not fit together")
    lemmas = lemmas or Lemmas()
    m = n // k
    columns = [[table[j][i] for j in range(n)] for i in range(c)]
    mixtures = [_mixture(col) for col in columns]
    ranks = [[0.0] * c for _ in range(n)]
    for j, row in enumerate(table):
        for position, i in enumerate(sorted(range(c), key=lambda i: (-row[i], i))):
            ranks[j][i] = position / (c - 1) if c > 1 else 0.0
    out = []
    for i, cand in enumerate(candidates):
        agree = [lemmas.agree(cand, p) for p in predictions]
        shown = [lemmas.agree(cand, a) for a in demo_answers]
        col = columns[i]
        others = [mx for o, mx in enumerate(mixtures) if o != i]
        row = [
            sum(agree) / n,
            sum(any(agree[b * k + p] for b in range(m)) for p in range(k)) / k,
            sum(any(agree[b * k + p] for p in range(k)) for b in range(m)) / m,
            float(predictions[0] == cand),
            mixtures[i], max(col), sum(col) / n, sum(col) / n / lengths[i], col[0],
            mixtures[i] - max(others) if others else 0.0,
            sum(ranks[j][i] for j in range(n)) / n,
            sum(ranks[j][i] == 0.0 for j in range(n)) / n,
            float(lengths[i]),
            float(any(shown)),
        ]
        if demo_features:
            d = len(demo_answers)
            row += [sum(shown) / d if d else 0.0, 1.0 - shown.index(True) / d if any(shown) else 0.0]
        out.append(row)
    return out


def model_identity(name: str) -> str:
    """What every name of one model resolves to, for :meth:`Chooser.check_model`: the embedded alias (also its
    converted directory in the cache), the hub id of an alias (``llama3.2_3b_it`` -> ``meta-llama/...``) or of a
    hub-cache snapshot directory (``.../models--org--name/snapshots/<rev>``), the absolute path of any other local
    directory, a hub id as it is."""
    from selfens_pl.engine.models import EMBEDDED_MODEL, MODEL_ALIASES, cache_root

    name = str(name)
    if name == EMBEDDED_MODEL:
        return EMBEDDED_MODEL
    if name in MODEL_ALIASES:
        return MODEL_ALIASES[name]
    path = Path(name).expanduser()
    if not (path.is_dir() or name.startswith((".", "/", "~")) or name.count("/") != 1):
        return name  # a hub id (org/name)
    path = path.resolve()
    if path == (cache_root() / EMBEDDED_MODEL).expanduser().resolve():
        return EMBEDDED_MODEL
    hub = re.search(r"/models--([^/]+?)--([^/]+)/snapshots/[^/]+$", path.as_posix())
    return f"{hub[1]}/{hub[2]}" if hub else str(path)


def loaded_model_name(lm) -> str:
    """The name or path a loaded model (a Hugging Face ``PreTrainedModel``, or a PEFT model around one) was loaded
    from: its config's ``_name_or_path``; one error when it has none (a model built in memory)."""
    config = getattr(lm, "config", None)
    name = getattr(config, "_name_or_path", None) or getattr(config, "name_or_path", None)
    if not name:
        raise UserError("a chooser file was given, but this model says nothing of where it was loaded from "
                        "(config._name_or_path is empty): load it from a directory or hub id")
    return str(name)


@dataclass(frozen=True)
class FitModel:
    """The model a chooser was fit with: ``name`` as ``--model.model`` gave it, ``identity`` its
    :func:`model_identity` (what :meth:`Chooser.check_model` compares), ``name_or_path`` what was loaded."""

    name: str
    identity: str
    name_or_path: str | None = None

    @classmethod
    def of(cls, name: str, lm) -> FitModel:
        """The record of model ``lm``, loaded as ``name`` (``--model.model``)."""
        loaded = loaded_model_name(lm)
        return cls(str(name), model_identity(loaded), loaded)

    def to_json(self) -> dict:
        return {"name": self.name, "identity": self.identity, "name_or_path": self.name_or_path}


@dataclass
class Chooser:
    """A fitted linear chooser: ``score = w . (x - mean) / scale + bias`` per candidate."""

    weights: list[float]
    bias: float
    mean: list[float]
    scale: list[float]
    features: tuple[str, ...] = FEATURES
    trained_on: int = 0
    #: ``(K, M)``: the paraphrases x few-shot blocks of the member sets it was fit on (``chooser --k --m``; groups
    #: with fewer paraphrases, short groups, included). ``None``: not recorded (a file written before it was).
    layout: tuple[int, int] | None = None
    #: The model it was fit with (``chooser`` records it); ``None``: fit with no model (hand-made), used with any.
    fit_with: FitModel | None = None
    #: ``(flag, path)`` it was loaded from (:meth:`load`), for the errors that name the file.
    source: tuple[str, str] | None = field(default=None, compare=False)

    def check_model(self, lm) -> None:
        """One error naming the file, the model it was fit with and the model in use (``lm``, loaded: its
        :func:`loaded_model_name`) when they are not one model (:func:`model_identity`); nothing without a
        recorded model."""
        if self.fit_with is None:
            return
        fit, in_use = self.fit_with, model_identity(loaded_model_name(lm))
        if in_use != fit.identity:
            flag, path = self.source or ("--model.head.init_args.chooser", "<chooser>")
            raise UserError(f"{flag}={path!r} was fit with the model {fit.name!r}"
                            + (f" ({fit.identity})" if fit.identity != fit.name else "")
                            + f", but this run's model is {in_use!r}: its scores mean something else under another "
                            "model; fit a chooser with this one (python -m selfens_pl chooser --model.model "
                            "<this model> --data.path <questions with answers> ... --out <file>) or drop the file "
                            "(rule: mixture)")

    def fits(self, paraphrases: int, blocks: int) -> bool:
        """Whether a member set of ``paraphrases x blocks`` is of the layout it was fit on (any without one)."""
        return self.layout is None or (blocks == self.layout[1] and 1 <= paraphrases <= self.layout[0])

    def scores(self, features: list[list[float]]) -> list[float]:
        return [self.bias + sum(w * (x - mu) / s for w, x, mu, s in zip(self.weights, row, self.mean, self.scale))
                for row in features]

    def choose(self, features: list[list[float]]) -> int:
        """The candidate with the highest score (ties: the lowest index); ``features`` must be non-empty."""
        return best(self.scores(features))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps({"format": FORMAT, "features": list(self.features), "weights": self.weights,
                                       "bias": self.bias, "mean": self.mean, "scale": self.scale,
                                       "trained_on": self.trained_on,
                                       **({} if self.layout is None else
                                          {"layout": {"paraphrases": self.layout[0], "blocks": self.layout[1]}}),
                                       "model": None if self.fit_with is None else self.fit_with.to_json()},
                                      indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path, flag: str = "--model.head.init_args.chooser",
             features: tuple[str, ...] = FEATURES) -> Chooser:
        """The chooser saved at ``path``, which must score ``features`` (:data:`FEATURES`, or :data:`DEMO_FEATURES`
        for a head with demonstration answers)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:  # missing, a directory, unreadable: named with its flag, not as a Union mismatch
            reason = exc.strerror or str(exc)
            raise UserError(f"{flag}={str(path)!r}: cannot read the chooser file ({reason}); make one with "
                            "`python -m selfens_pl chooser --out <file>`") from None
        except json.JSONDecodeError as exc:
            raise UserError(f"{flag}={str(path)!r}: not a chooser file (invalid JSON: {exc.msg})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise UserError(f"{flag}={str(path)!r}: not a chooser file (expected format {FORMAT!r}; make one with "
                            "`python -m selfens_pl chooser fit`)")
        if tuple(data.get("features", ())) != features:
            demos = "with" if features == DEMO_FEATURES else "without"
            raise UserError(f"{flag}={str(path)!r}: its features {data.get('features')} are not those of a head "
                            f"{demos} demo_answers {list(features)}: fit it again (`python -m selfens_pl chooser fit`"
                            f"{' --demo_answers true' if features == DEMO_FEATURES else ''})")
        layout = data.get("layout")
        if layout is not None:
            shape = (layout.get("paraphrases"), layout.get("blocks")) if isinstance(layout, dict) else (None, None)
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape):
                raise UserError(f"{flag}={str(path)!r}: its 'layout' {layout!r} must be {{\"paraphrases\": K, "
                                "\"blocks\": M}} with whole numbers >= 1")
            layout = shape
        return cls([float(w) for w in data["weights"]], float(data["bias"]), [float(v) for v in data["mean"]],
                   [float(v) for v in data["scale"]], features, int(data.get("trained_on", 0)), layout,
                   _fit_model(data, flag, path), (flag, str(path)))


def _fit_model(data: dict, flag: str, path) -> FitModel | None:
    """The ``"model"`` of a chooser file's ``data`` (module docstring): null, or ``{"name", "identity"?,
    "name_or_path"?}`` (a missing identity is the name's); one error for a file without it or a malformed one."""
    if "model" not in data:
        raise UserError(f"{flag}={str(path)!r} does not say which model it was fit with (written before chooser files "
                        "recorded it): fit it again with your model (python -m selfens_pl chooser --model.model "
                        "<model> ...), or add \"model\": {\"name\": \"<the model it was fit with>\"} to it")
    model = data["model"]
    if model is None:
        return None
    fields = ("name", "identity", "name_or_path")
    if not (isinstance(model, dict) and isinstance(model.get("name"), str) and model["name"]
            and set(model) <= set(fields)
            and all(model.get(k) is None or isinstance(model[k], str) for k in fields)):
        raise UserError(f"{flag}={str(path)!r}: its 'model' {model!r} must be null or {{\"name\": \"<model>\", "
                        "\"identity\": ..., \"name_or_path\": ...}} with strings")
    return FitModel(model["name"], model.get("identity") or model_identity(model["name"]), model.get("name_or_path"))


def fit_chooser(groups: list[list[list[float]]], labels: list[list[bool]], c: float = 1.0,
                features: tuple[str, ...] = FEATURES) -> Chooser:
    """Logistic regression (scikit-learn, L2 with inverse strength ``c``, balanced classes) of "candidate is right"
    over every candidate of every group. ``groups[g]``: ``[C_g][F]`` features; ``labels[g]``: ``[C_g]``."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    x = np.array([row for feats in groups for row in feats], dtype=np.float64)
    y = np.array([bool(v) for lab in labels for v in lab])
    if len(x) and x.shape[1] != len(features):
        raise InternalError(f"chooser fit: {x.shape[1]} features per candidate for the {len(features)} named")
    if len(x) == 0 or y.all() or not y.any():
        raise UserError(f"chooser fit: {len(x)} candidates of which {int(y.sum())} right: it needs both right and "
                        "wrong candidates (more facts, or facts with answers)")
    mean, scale = x.mean(0), x.std(0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
    model.fit((x - mean) / scale, y)
    return Chooser([float(w) for w in model.coef_[0]], float(model.intercept_[0]), [float(v) for v in mean],
                   [float(v) for v in scale], tuple(features), len(groups))


def fold_of(fact_id: str, folds: int) -> int:
    """A fact's fold: a hash of its id (stable across runs, processes and file order)."""
    return int(hashlib.sha256(str(fact_id).encode()).hexdigest()[:8], 16) % folds


def fold_choosers(ids: list[str], groups: list[list[list[float]]], labels: list[list[bool]], folds: int = 5,
                  c: float = 1.0, features: tuple[str, ...] = FEATURES) -> dict[int, Chooser]:
    """``{fold: chooser fit on every OTHER fold}`` (:func:`fold_of`): score fact ``i`` with
    ``choosers[fold_of(ids[i], folds)]`` and no fact is ever scored by a chooser that saw it."""
    if folds < 2:
        raise UserError(f"--chooser_folds must be >= 2, got {folds}")
    fold = [fold_of(i, folds) for i in ids]
    return {f: fit_chooser([groups[g] for g in range(len(ids)) if fold[g] != f and groups[g]],
                           [labels[g] for g in range(len(ids)) if fold[g] != f and groups[g]], c, features)
            for f in range(folds)}
