"""The K-factor contract every disentangled model in :mod:`disentangle.models` implements
(on top of the ranking contract of :mod:`disentangle.models.recommender`), and the config
sections' validation.

The trainer, the ranking evaluation, the factor metrics, the plots and the explanations are
written once against this interface (DESIGN.md, "The K-factor contract").

Users are always addressed the same way: ``users`` is a ``LongTensor`` of user indices into
the training :class:`~disentangle.data.InteractionData`, and ``history`` is a sparse CSR
``B x M`` float tensor of the items those users are known to have interacted with (the model's
input for autoencoders, the items masked at ranking time for every model). Autoencoders such
as MacridVAE read ``history`` and ignore ``users`` (so they serve held-out users); graph
models such as DisenGCN read ``users`` and ignore ``history``.
"""
from __future__ import annotations

import dataclasses
import math
import reprlib
import types
import typing
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor

from .recommender import Recommender

#: Bound of a 64-bit signed integer: every ``int`` field ends up in a torch or numpy int64.
INT64 = 2 ** 63
#: Largest float32: every ``float`` field ends up in float32 arithmetic (a learning rate of
#: 1e300 cannot even be applied to a float32 weight).
FLOAT32_MAX = torch.finfo(torch.float32).max
#: The widest representation a model may ask for (factors x dimensions per factor): far
#: beyond any published setting, and refused before anything is allocated.
MAX_WIDTH = 1 << 16


def short_repr(value: Any) -> str:
    """``repr(value)`` cut to one short line (a YAML alias can make a value huge)."""
    return _SHORT.repr(value)


_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlevel = 60, 60, 2


class Constraint(ABC):
    """One set of values a config field accepts (scikit-learn's parameter constraints).

    ``constraint(value)`` says whether ``value`` (already of the field's type) belongs to the
    set; :attr:`accepted` says which values do, in the words of an error message.
    """

    accepted: str

    @abstractmethod
    def __call__(self, value: Any) -> bool:
        """Whether ``value`` is accepted."""


class Interval(Constraint):
    """Numbers from ``low`` to ``high`` (``None``: unbounded on that side); ``closed`` names
    the ends that belong to the interval: ``"both"``, ``"left"``, ``"right"`` or
    ``"neither"``. With ``kind=int`` only whole numbers (``3`` or ``3.0``) are accepted.
    """

    def __init__(self, kind: type, low: float | None = None, high: float | None = None,
                 closed: str = "both", accepted: str | None = None) -> None:
        if kind not in (int, float) or closed not in ("both", "left", "right", "neither"):
            raise ValueError(f"Interval({kind!r}, closed={closed!r}): kind int or float, "
                             f"closed both, left, right or neither")
        self.kind, self.low, self.high, self.closed = kind, low, high, closed
        self.accepted = accepted or self._words()

    def _words(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        left, right = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.high is None:
            return what if self.low is None else f"{what} {'>=' if left else '>'} {self.low}"
        if self.low is None:
            return f"{what} {'<=' if right else '<'} {self.high}"
        return f"{what} in {'[' if left else '('}{self.low}, {self.high}{']' if right else ')'}"

    def __call__(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind is int and isinstance(value, float) and not value.is_integer():
            return False
        left, right = self.closed in ("both", "left"), self.closed in ("both", "right")
        return ((self.low is None or value > self.low or (left and value == self.low))
                and (self.high is None or value < self.high or (right and value == self.high)))


class Options(Constraint):
    """One of a fixed set of values."""

    def __init__(self, *values: Any, accepted: str | None = None) -> None:
        self.values = values
        words = [str(v) for v in values]
        self.accepted = accepted or (", ".join(words[:-1]) + " or " + words[-1]
                                     if len(words) > 1 else words[0])

    def __call__(self, value: Any) -> bool:
        return any(type(value) is type(v) and value == v for v in self.values)


class NonBlank(Constraint):
    """Text with at least one character that is not white space (a name or a path)."""

    def __init__(self, accepted: str = "a non-blank text") -> None:
        self.accepted = accepted

    def __call__(self, value: Any) -> bool:
        return isinstance(value, str) and bool(value.strip())


class Items(Constraint):
    """A list of at least ``min_len`` items, each accepted by ``item``."""

    def __init__(self, item: Constraint, min_len: int = 0, accepted: str | None = None) -> None:
        self.item, self.min_len = item, min_len
        at_least = f" (at least {min_len})" if min_len else ""
        self.accepted = accepted or f"a list of items{at_least}, each {item.accepted}"

    def __call__(self, value: Any) -> bool:
        return (isinstance(value, list) and len(value) >= self.min_len
                and all(self.item(v) for v in value))


def hint_words(hint: Any) -> str:
    """What a type hint accepts, in the words of an error message (``int``, ``finite float
    or null``, ``list[int]``)."""
    if hint is type(None):
        return "null"
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        words = [hint_words(a) for a in args if a is not type(None)]
        return " or ".join(words + ["null"] * (type(None) in args))
    if typing.get_origin(hint) is list:
        return f"list[{hint_words(args[0])}]"
    return {float: "finite float", bool: "bool (true or false)"}.get(hint, hint.__name__)


def matches_hint(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of the type ``hint`` (``int``, ``float``, ``bool``, ``str``,
    ``list[X]``, unions such as ``float | None``, or a class), strictly: a ``bool`` is not
    an ``int``, an ``int`` must fit in 64 bits, a ``float`` must be finite and within float32
    range (an ``int`` in that range is a ``float``), and ``None`` only matches an optional
    hint."""
    if hint is type(None):
        return value is None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(matches_hint(value, a) for a in args)
    if origin is list:
        return isinstance(value, list) and all(matches_hint(v, args[0]) for v in value)
    if isinstance(value, bool) or hint is bool:
        return hint is bool and isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and -INT64 <= value < INT64
    if hint is float:
        return isinstance(value, (int, float)) and -FLOAT32_MAX <= value <= FLOAT32_MAX
    if origin is None and isinstance(hint, type):
        return isinstance(value, hint)
    raise TypeError(f"no validation rule for the type hint {hint!r}")


@dataclasses.dataclass
class ConfigSection:
    """Base of every config dataclass: a section of the run config (``data``, ``train``) or a
    model's hyperparameters.

    :meth:`validate_all` checks a filled-in section in three steps, as scikit-learn checks an
    estimator's parameters:

    1. **Types, from the type hints.** Every field's value must be of its annotated type
       (:func:`matches_hint`): ``None`` only where the hint is optional, floats finite and
       within float32 range, ints not bools and within 64 bits, lists typed per element.
    2. **The table.** :attr:`constraints` maps a field to the :class:`Constraint` objects it
       may satisfy (any one of them, like scikit-learn's ``_parameter_constraints``); a
       ``None`` that the hint allows is not checked against it.
    3. **Rules across fields**, in :meth:`validate`.

    Every violation is a one-line ``ValueError``: ``"<field>=<value>: expected <type>"`` or
    ``"<field>=<value> is out of range: expected <accepted>"``.
    """

    #: field name -> the constraints of which its value must satisfy one
    constraints: ClassVar[dict[str, tuple[Constraint, ...]]] = {}

    def validate(self) -> None:
        """Raise ``ValueError`` for an out-of-range field (rules that the table cannot say)."""

    def validate_all(self) -> None:
        """Check types (from the hints), the :attr:`constraints` table, then :meth:`validate`."""
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            value, hint = getattr(self, field.name), hints[field.name]
            if not matches_hint(value, hint):
                words = hint_words(hint)
                if hint is int and isinstance(value, int) and not isinstance(value, bool):
                    words = f"{words} within 64 bits (magnitude < 2**63)"
                if hint is float and not isinstance(value, bool) and (
                        isinstance(value, int) or isinstance(value, float)
                        and math.isfinite(value)):
                    words = f"{words} within float32 range (magnitude <= {FLOAT32_MAX:.4g})"
                raise ValueError(f"{field.name}={short_repr(value)}: expected {words}")
            rule = self.constraints.get(field.name, ())
            if value is not None and rule:
                self.check(field.name, value, any(c(value) for c in rule),
                           " or ".join(c.accepted for c in rule))
        self.validate()

    @staticmethod
    def check(name: str, value: Any, ok: bool, accepted: str) -> None:
        """Raise a one-line ``ValueError`` unless ``ok``."""
        if not ok:
            raise ValueError(f"{name}={short_repr(value)} is out of range: expected {accepted}")


@dataclasses.dataclass
class ModelConfig(ConfigSection):
    """Base of every model's hyperparameter dataclass.

    Subclasses declare their fields with paper defaults, and their ranges either in the
    :attr:`~ConfigSection.constraints` table or in :meth:`validate`, which raises
    :class:`ValueError` naming the field, the value and what is accepted. Types, nulls and
    finiteness follow from the fields' type hints (:meth:`~ConfigSection.validate_all`).
    """


class FactorRecommender(Recommender):
    """A recommender whose representations are split into ``K`` factors: the ranking contract
    of :class:`~disentangle.models.recommender.Recommender` plus the K-factor contract below.
    """

    num_factors: int

    # -- K-factor contract --------------------------------------------------------------
    @abstractmethod
    def item_factor_weights(self) -> Tensor:
        """``M x K``; each row a distribution over factors."""

    @abstractmethod
    def user_factor_weights(self, users: Tensor, history: Tensor) -> Tensor:
        """``B x K``; each row a distribution: how much each factor drives the user."""

    @abstractmethod
    def factor_embeddings(self, users: Tensor, history: Tensor) -> Tensor:
        """``B x K x d`` user representations, one ``d``-vector per factor."""

    @abstractmethod
    def item_factor_embeddings(self) -> Tensor:
        """``M x K x d`` item representations, one ``d``-vector per factor."""

    @abstractmethod
    def explain(self, users: Tensor, history: Tensor, items: Tensor) -> Tensor:
        """``B x N x K``: for user ``b`` and item ``items[b, n]``, the share of the score that
        each factor contributes (rows sum to one; a score term that belongs to no factor,
        such as an item bias, is left out)."""
