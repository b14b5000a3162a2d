"""A learned chooser: which of a group's candidate answers is right, from what the engine already computed.

Rescoring rules (:mod:`selfens_pl.scoring.rescoring`) pick a candidate with one fixed formula over the members'
sequence log-probabilities. The chooser learns how to weigh the signals instead (as LPAQA learns prompt-ensemble
weights on training facts, Jiang et al. 2020): a model over per-candidate features, fit on grouped facts with known
answers, scores each candidate; the highest wins (ties: the lowest candidate index, i.e. the candidate first
produced by the lowest member, as the rules do). Two models (:func:`fit_chooser`, ``chooser --model_type``):

* ``logistic``: a logistic regression (scikit-learn), the chooser's first model and the standard features' default;
* ``boosting``: gradient-boosted trees (scikit-learn's ``HistGradientBoostingClassifier``, :data:`BOOSTING`), the
  rich features' default. It is a pointwise model over the candidates with the argmax per group, not a pairwise or
  listwise ranker: scikit-learn has no ranking objective (LightGBM's lambdarank would add a dependency for one
  head), and with one right candidate per group at most the argmax of a pointwise log-odds is what a listwise
  softmax would pick; what a listwise model sees of the other candidates, the rich features give each candidate
  (its gap to the group's best score, its place among the group's candidates, :mod:`~selfens_pl.scoring.
  chooser_features`). Trees learn the interactions (answer type x question word, demonstrations' agreement x the
  members' scores) a linear model cannot.

Calibrated confidence: :func:`calibration` fits ``P(the chosen candidate is right)`` on the chosen candidate's score
and its margin over the next best (Platt scaling), on choices of choosers fit on other folds of the training groups;
:meth:`Chooser.confidence` gives it and the head writes it to the record (``confidence``), so answering only the most
confident questions trades coverage for accuracy.

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
fact's choice comes from the chooser fit on the other folds. The fitted chooser is saved as a JSON file that
:class:`Chooser` loads and scores with without scikit-learn: a logistic one (format :data:`FORMAT`: feature names,
standardisation, weights; files written before load as they did), a boosted one (:data:`TREES_FORMAT`: feature
names, baseline and every tree's nodes as plain lists, :func:`trees_of`: no pickle, so nothing runs at load, and
a damaged file is one error at load), both with the optional ``calibration``.

The standard features are :data:`FEATURES` (:data:`DEMO_FEATURES`); the rich ones :data:`RICH_FEATURES`
(:data:`RICH_DEMO_FEATURES`, :mod:`selfens_pl.scoring.chooser_features`); a file names the set it scores and a head
with the file computes that set.

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
from selfens_pl.scoring.chooser_features import (DEMO_FEATURES, FEATURES, RICH_DEMO_FEATURES, RICH_FEATURES,
                                                 candidate_features, rich_features)
from selfens_pl.scoring.rescoring import best

__all__ = ["DEMO_FEATURES", "FEATURES", "RICH_DEMO_FEATURES", "RICH_FEATURES", "Chooser", "FitModel",
           "candidate_features", "feature_set", "fit_chooser", "fold_choosers", "fold_of", "rich_features"]

FORMAT = "selfens_pl.chooser/1"
#: A boosted-tree chooser's file (a logistic one keeps :data:`FORMAT`, so files written before load as they did).
TREES_FORMAT = "selfens_pl.chooser/2"
#: ``--chooser_features`` -> the feature sets ``(without, with)`` demonstration answers.
FEATURE_SETS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "standard": (FEATURES, DEMO_FEATURES), "rich": (RICH_FEATURES, RICH_DEMO_FEATURES)}
#: The model each feature set is fit with unless told otherwise (``chooser --model_type``).
DEFAULT_MODEL = {"standard": "logistic", "rich": "boosting"}
MODEL_TYPES: tuple[str, ...] = ("logistic", "boosting")


def feature_set(name: str, demo_answers: bool, flag: str = "--chooser_features") -> tuple[str, ...]:
    """The feature names of set ``name`` (:data:`FEATURE_SETS`) with or without demonstration answers."""
    if name not in FEATURE_SETS:
        raise UserError(f"{flag}={name!r}: choose one of {', '.join(FEATURE_SETS)}")
    return FEATURE_SETS[name][bool(demo_answers)]


def set_name(features: tuple[str, ...]) -> str:
    """The :data:`FEATURE_SETS` name of ``features``."""
    for name, sets in FEATURE_SETS.items():
        if tuple(features) in sets:
            return name
    raise InternalError(f"no feature set has the features {list(features)}")


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
    """A fitted chooser. Logistic: ``score = w . (x - mean) / scale + bias`` per candidate. Boosted trees
    (``trees``): ``score = baseline + sum_t value_t(x)``, each tree's leaf value for ``x`` (no standardisation).
    Either score is a log-odds that the candidate is right; ``calibration`` ``[a, b, c]`` (fit on held-out folds)
    maps the chosen candidate's score and its margin over the next best to ``P(right) = sigmoid(a score + b margin
    + c)`` (:meth:`confidence`)."""

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
    #: Boosted trees (:func:`trees_of`): ``[{"feature", "threshold", "left", "right", "leaf", "value",
    #: "missing_left"}]``, one list per field over the tree's nodes (node 0 the root); ``None``: logistic.
    trees: list[dict] | None = None
    baseline: float = 0.0
    #: ``[a, b, c]`` of :meth:`confidence`; ``None``: not calibrated (no ``confidence`` in the records).
    calibration: list[float] | None = None

    @property
    def model_type(self) -> str:
        return "logistic" if self.trees is None else "boosting"

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
        """``[C]`` each candidate's log-odds of being right, of its ``[C][F]`` features."""
        if self.trees is not None:
            return [self.baseline + sum(_leaf_value(tree, row) for tree in self.trees) for row in features]
        return [self.bias + sum(w * (x - mu) / s for w, x, mu, s in zip(self.weights, row, self.mean, self.scale))
                for row in features]

    def confidence(self, scores: list[float]) -> float | None:
        """The calibrated probability that the best of ``scores`` (:meth:`scores` of a group's candidates) is
        right; ``None`` without a calibration."""
        if self.calibration is None or not scores:
            return None
        top, margin = _top_and_margin(scores)
        a, b, c = self.calibration
        z = a * top + b * margin + c
        return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))

    def choose(self, features: list[list[float]]) -> int:
        """The candidate with the highest score (ties: the lowest index); ``features`` must be non-empty."""
        return best(self.scores(features))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"format": FORMAT if self.trees is None else TREES_FORMAT, "features": list(self.features)}
        if self.trees is None:
            data.update(weights=self.weights, bias=self.bias, mean=self.mean, scale=self.scale)
        else:
            data.update(model_type="boosting", baseline=self.baseline)
        data["trained_on"] = self.trained_on
        if self.layout is not None:
            data["layout"] = {"paraphrases": self.layout[0], "blocks": self.layout[1]}
        data["model"] = None if self.fit_with is None else self.fit_with.to_json()
        if self.calibration is not None:
            data["calibration"] = self.calibration
        text = json.dumps(data, indent=2)
        if self.trees is not None:  # one tree a line: readable, and a tenth of the indented size
            text = text[:-2] + ',\n  "trees": [\n' + ",\n".join(
                "    " + json.dumps(tree, separators=(",", ":")) for tree in self.trees) + "\n  ]\n}"
        atomic_write(path, text + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path, flag: str = "--model.head.init_args.chooser",
             features: tuple[str, ...] | None = FEATURES, demo_answers: bool | None = None) -> Chooser:
        """The chooser saved at ``path``, which must score ``features`` (:data:`FEATURES`, or :data:`DEMO_FEATURES`
        for a head with demonstration answers; ``None``: any feature set of :data:`FEATURE_SETS` with or without
        them, as ``demo_answers`` says: a head takes the set its file was fit with)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:  # missing, a directory, unreadable: named with its flag, not as a Union mismatch
            reason = exc.strerror or str(exc)
            raise UserError(f"{flag}={str(path)!r}: cannot read the chooser file ({reason}); make one with "
                            "`python -m selfens_pl chooser --out <file>`") from None
        except json.JSONDecodeError as exc:
            raise UserError(f"{flag}={str(path)!r}: not a chooser file (invalid JSON: {exc.msg})") from None
        if not isinstance(data, dict) or data.get("format") not in (FORMAT, TREES_FORMAT):
            raise UserError(f"{flag}={str(path)!r}: not a chooser file (expected format {FORMAT!r} or "
                            f"{TREES_FORMAT!r}; make one with `python -m selfens_pl chooser`)")
        own = tuple(data.get("features", ()))
        wanted = (features,) if features is not None else tuple(sets[bool(demo_answers)]
                                                                for sets in FEATURE_SETS.values())
        if own not in wanted:
            demos = "with" if wanted[0] in (DEMO_FEATURES, RICH_DEMO_FEATURES) else "without"
            raise UserError(f"{flag}={str(path)!r}: its features {data.get('features')} are not those of a head "
                            f"{demos} demo_answers {' or '.join(str(list(w)) for w in wanted)}: fit it again "
                            f"(`python -m selfens_pl chooser`{' --demo_answers true' if demos == 'with' else ''})")
        layout = data.get("layout")
        if layout is not None:
            shape = (layout.get("paraphrases"), layout.get("blocks")) if isinstance(layout, dict) else (None, None)
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape):
                raise UserError(f"{flag}={str(path)!r}: its 'layout' {layout!r} must be {{\"paraphrases\": K, "
                                "\"blocks\": M}} with whole numbers >= 1")
            layout = shape
        try:
            if data["format"] == TREES_FORMAT:
                model = dict(weights=[], bias=0.0, mean=[], scale=[], trees=[_tree(t, len(own)) for t in data["trees"]],
                             baseline=float(data["baseline"]))
            else:
                model = dict(weights=[float(w) for w in data["weights"]], bias=float(data["bias"]),
                             mean=[float(v) for v in data["mean"]], scale=[float(v) for v in data["scale"]])
            calibration = data.get("calibration")
            if calibration is not None:
                calibration = [float(v) for v in calibration]
                if len(calibration) != 3:
                    raise ValueError("calibration")
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{flag}={str(path)!r}: a damaged chooser file ({type(exc).__name__}: {exc}); fit it "
                            "again with `python -m selfens_pl chooser`") from None
        return cls(**model, features=own, trained_on=int(data.get("trained_on", 0)), layout=layout,
                   fit_with=_fit_model(data, flag, path), source=(flag, str(path)), calibration=calibration)


_TREE_FIELDS = ("feature", "threshold", "left", "right", "leaf", "value", "missing_left")


def _tree(tree, features: int) -> dict:
    """A tree of a chooser file, checked: every field one list per node, children and features in range (a hand
    edit that breaks it is said at load, not as an IndexError while choosing)."""
    nodes = len(tree["value"])
    if set(tree) != set(_TREE_FIELDS) or any(len(tree[k]) != nodes for k in _TREE_FIELDS) or not nodes:
        raise ValueError(f"a tree needs the fields {list(_TREE_FIELDS)}, one value per node")
    for i in range(nodes):
        if not tree["leaf"][i] and not (0 <= tree["feature"][i] < features
                                        and i < tree["left"][i] < nodes and i < tree["right"][i] < nodes):
            raise ValueError(f"tree node {i} points outside the tree or the features")
    return tree


def _leaf_value(tree: dict, row: list[float]) -> float:
    """The value of the leaf ``row`` ends in: left where ``x[feature] <= threshold`` (NaN: ``missing_left``), as
    scikit-learn's histogram trees predict on raw (unbinned) features."""
    node = 0
    while not tree["leaf"][node]:
        x = row[tree["feature"][node]]
        left = tree["missing_left"][node] if x != x else x <= tree["threshold"][node]
        node = tree["left"][node] if left else tree["right"][node]
    return tree["value"][node]


def _top_and_margin(scores: list[float]) -> tuple[float, float]:
    """The best score and its margin over the next best (capped at 10; 10 for a lone candidate)."""
    ordered = sorted(scores, reverse=True)
    return ordered[0], min(10.0, ordered[0] - ordered[1]) if len(ordered) > 1 else 10.0


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


#: The boosted trees' settings (scikit-learn ``HistGradientBoostingClassifier``): small trees, slow learning, no
#: early stopping (its validation split would cut groups apart and make the fit depend on row order).
BOOSTING = {"learning_rate": 0.05, "max_iter": 200, "max_leaf_nodes": 15, "min_samples_leaf": 20,
            "l2_regularization": 1.0}
CALIBRATION_FOLDS = 3


def fit_chooser(groups: list[list[list[float]]], labels: list[list[bool]], c: float = 1.0,
                features: tuple[str, ...] = FEATURES, model_type: str = "logistic",
                calibrate: bool = True) -> Chooser:
    """"Candidate is right" over every candidate of every group: ``logistic`` regression (scikit-learn, L2 with
    inverse strength ``c``, balanced classes) or ``boosting`` (:data:`BOOSTING` trees; ``c`` unused), both scored
    per candidate and the argmax per group chosen. ``groups[g]``: ``[C_g][F]`` features; ``labels[g]``: ``[C_g]``.
    ``calibrate``: also :func:`calibration` over :data:`CALIBRATION_FOLDS` folds of these groups (the chooser's
    ``confidence``; none when the folds are too small to fit it)."""
    if model_type not in MODEL_TYPES:
        raise UserError(f"--model_type={model_type!r}: choose one of {', '.join(MODEL_TYPES)}")
    chooser = _fit(groups, labels, c, features, model_type)
    if calibrate:
        chooser.calibration = calibration(groups, labels, c, features, model_type)
    return chooser


def _fit(groups, labels, c: float, features: tuple[str, ...], model_type: str) -> Chooser:
    import numpy as np

    x = np.array([row for feats in groups for row in feats], dtype=np.float64)
    y = np.array([bool(v) for lab in labels for v in lab])
    if len(x) and x.shape[1] != len(features):
        raise InternalError(f"chooser fit: {x.shape[1]} features per candidate for the {len(features)} named")
    if len(x) == 0 or y.all() or not y.any():
        raise UserError(f"chooser fit: {len(x)} candidates of which {int(y.sum())} right: it needs both right and "
                        "wrong candidates (more facts, or facts with answers)")
    if model_type == "boosting":
        from sklearn.ensemble import HistGradientBoostingClassifier

        model = HistGradientBoostingClassifier(**BOOSTING, early_stopping=False, random_state=0).fit(x, y)
        return Chooser([], 0.0, [], [], tuple(features), len(groups), trees=trees_of(model),
                       baseline=float(np.ravel(model._baseline_prediction)[0]))
    from sklearn.linear_model import LogisticRegression

    mean, scale = x.mean(0), x.std(0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
    model.fit((x - mean) / scale, y)
    return Chooser([float(w) for w in model.coef_[0]], float(model.intercept_[0]), [float(v) for v in mean],
                   [float(v) for v in scale], tuple(features), len(groups))


def trees_of(model) -> list[dict]:
    """A fitted binary ``HistGradientBoostingClassifier``'s trees as :attr:`Chooser.trees` (plain lists: a JSON
    file, no pickle). Its decision function is ``baseline + sum of the trees' leaf values`` (tested)."""
    trees = []
    for (predictor,) in model._predictors:  # one tree per iteration for a binary target
        nodes = predictor.nodes
        if nodes["is_categorical"].any():
            raise InternalError("a chooser tree split on a categorical feature; the chooser has none")
        trees.append({"feature": [int(v) for v in nodes["feature_idx"]],
                      "threshold": [float(v) for v in nodes["num_threshold"]],
                      "left": [int(v) for v in nodes["left"]], "right": [int(v) for v in nodes["right"]],
                      "leaf": [int(v) for v in nodes["is_leaf"]], "value": [float(v) for v in nodes["value"]],
                      "missing_left": [int(v) for v in nodes["missing_go_to_left"]]})
    return trees


def calibration(groups, labels, c: float = 1.0, features: tuple[str, ...] = FEATURES,
                model_type: str = "logistic", folds: int = CALIBRATION_FOLDS) -> list[float] | None:
    """``[a, b, c]`` of :meth:`Chooser.confidence`: a logistic regression (Platt scaling) of "the chosen candidate
    is right" on its score and margin, each group scored by a chooser fit on the other ``folds`` folds (group
    ``g`` in fold ``g % folds``); ``None`` when a fold cannot be fit or the held-out choices are all right or all
    wrong."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    kept = [g for g in range(len(groups)) if groups[g]]
    points, right = [], []
    for f in range(folds):
        train = [g for g in kept if g % folds != f]
        try:
            model = _fit([groups[g] for g in train], [labels[g] for g in train], c, features, model_type)
        except UserError:  # a fold with no right (or no wrong) candidate
            return None
        for g in kept:
            if g % folds == f:
                scores = model.scores(groups[g])
                points.append(_top_and_margin(scores))
                right.append(bool(labels[g][best(scores)]))
    if len(set(right)) < 2:
        return None
    platt = LogisticRegression(C=1e4, max_iter=2000).fit(np.array(points), np.array(right))
    return [float(platt.coef_[0][0]), float(platt.coef_[0][1]), float(platt.intercept_[0])]


def fold_of(fact_id: str, folds: int) -> int:
    """A fact's fold: a hash of its id (stable across runs, processes and file order)."""
    return int(hashlib.sha256(str(fact_id).encode()).hexdigest()[:8], 16) % folds


def fold_choosers(ids: list[str], groups: list[list[list[float]]], labels: list[list[bool]], folds: int = 5,
                  c: float = 1.0, features: tuple[str, ...] = FEATURES,
                  model_type: str | None = None) -> dict[int, Chooser]:
    """``{fold: chooser fit on every OTHER fold}`` (:func:`fold_of`): score fact ``i`` with
    ``choosers[fold_of(ids[i], folds)]`` and no fact is ever scored by a chooser that saw it (nor calibrated on
    it: the calibration folds are within the other folds). ``model_type``: :data:`DEFAULT_MODEL` of the feature
    set when ``None`` (the sweep's cross-validated head: logistic for the standard features, boosting for rich)."""
    if folds < 2:
        raise UserError(f"--chooser_folds must be >= 2, got {folds}")
    model_type = model_type or DEFAULT_MODEL[set_name(features)]
    fold = [fold_of(i, folds) for i in ids]
    return {f: fit_chooser([groups[g] for g in range(len(ids)) if fold[g] != f and groups[g]],
                           [labels[g] for g in range(len(ids)) if fold[g] != f and groups[g]], c, features,
                           model_type)
            for f in range(folds)}
