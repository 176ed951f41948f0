"""The valid values of configuration keys, declared next to the code they constrain.

A constructor states each parameter's valid values in its annotation:

    latent_dim: Annotated[int, Range(1)] = 32
    beta: Annotated[float, Range(0)] = 1.0
    channels: Annotated[tuple[int, ...], NonEmpty, Range(1)] = (32, 64, 128)
    sampler: Annotated[str, OneOf(SAMPLERS)] = "ddim"
    val_check_interval: Annotated[int, Range(1)] | Annotated[float, Range(0, 1, low_open=True)]

`genlab.run.validate` reads these annotations (`typing.get_type_hints(..., include_extras=True)`)
of every class a run configures and checks every configured value at start-up, before any data
is decoded, any model built or anything written, with a message that names the key, the value
and what is valid. A new family declares its ranges by writing its constructor.

`check_value` is the one checker; `describe` says in words what a hint accepts. This module
imports nothing heavy, so any module can use it.
"""

from __future__ import annotations

import collections.abc
import math
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from genlab.errors import GenlabError, yaml_repr

__all__ = ["Annotated", "NonEmpty", "OneOf", "Range", "check_value", "describe"]


class Constraint:
    """Metadata of an `Annotated` hint that restricts the values of its type."""

    def accepts(self, value) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class Range(Constraint):
    """low <= value <= high (either bound optional; `low_open` / `high_open` make it strict).
    On a list it applies to every element. `note` explains a special value, e.g. "-1: no
    limit"."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    note: str = ""

    def _number_ok(self, v) -> bool:
        if isinstance(v, float) and math.isnan(v):
            return False
        if self.low is not None and (v <= self.low if self.low_open else v < self.low):
            return False
        if self.high is not None and (v >= self.high if self.high_open else v > self.high):
            return False
        return True

    def accepts(self, value) -> bool:
        if _is_sequence(value):
            return all(self.accepts(v) for v in value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return True  # the type check speaks for other types
        return self._number_ok(value)

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            text = (f"in {'(' if self.low_open else '['}{_num(self.low)}, {_num(self.high)}"
                    f"{')' if self.high_open else ']'}")
        elif self.low is not None:
            text = f"{'>' if self.low_open else '>='} {_num(self.low)}"
        elif self.high is not None:
            text = f"{'<' if self.high_open else '<='} {_num(self.high)}"
        else:
            text = ""
        return f"{text} ({self.note})" if self.note else text


class _NonEmpty(Constraint):
    """A list with at least one element."""

    def accepts(self, value) -> bool:
        return not _is_sequence(value) or len(value) > 0

    def describe(self) -> str:
        return "non-empty"

    def __repr__(self) -> str:
        return "NonEmpty"


NonEmpty = _NonEmpty()


class OneOf(Constraint):
    """One of `values`, compared with their type (so 0 is not false)."""

    def __init__(self, values: Iterable):
        self.values = tuple(values)

    def accepts(self, value) -> bool:
        if _is_sequence(value):
            return all(self.accepts(v) for v in value)
        return any(type(v) is type(value) and v == value for v in self.values)

    def describe(self) -> str:
        return "one of " + ", ".join(v if isinstance(v, str) else yaml_repr(v)
                                     for v in self.values)

    def __repr__(self) -> str:
        return f"OneOf({self.values!r})"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def _is_sequence(value) -> bool:
    return isinstance(value, (list, tuple))


_UNION_TYPES = (Union, types.UnionType)
_SEQUENCES = (list, tuple, collections.abc.Sequence, typing.Sequence)


def _problem(value, hint) -> str | None:
    """None when `value` fits `hint`; else "range" (a number outside its Range) or "type"
    (anything else: the wrong kind of value, not one of the choices, an empty list)."""
    origin = get_origin(hint)
    if origin is Annotated:
        base, *metadata = get_args(hint)
        if problem := _problem(value, base):
            return problem
        failed = [m for m in metadata if isinstance(m, Constraint) and not m.accepts(value)]
        if not failed:
            return None
        return "range" if any(isinstance(c, Range) for c in failed) else "type"
    if origin in _UNION_TYPES:
        problems = [_problem(value, alternative) for alternative in get_args(hint)]
        if None in problems:
            return None
        return "range" if "range" in problems else "type"
    if origin is Literal:
        return None if OneOf(get_args(hint)).accepts(value) else "type"
    if hint is type(None):
        return None if value is None else "type"
    if hint is bool:
        return None if isinstance(value, bool) else "type"
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "type"
    if hint is float:
        return (None if isinstance(value, (int, float)) and not isinstance(value, bool)
                else "type")
    if hint is str:
        return None if isinstance(value, str) else "type"
    if origin in _SEQUENCES or hint in (list, tuple):
        if not _is_sequence(value):
            return "type"
        args = [a for a in get_args(hint) if a is not Ellipsis]
        if origin is tuple and args and Ellipsis not in get_args(hint) and len(value) != len(args):
            return "type"
        element = args[0] if len(args) == 1 or Ellipsis in get_args(hint) else None
        problems = [_problem(v, element if element is not None else a)
                    for v, a in zip(value, args if element is None else [element] * len(value))]
        return "range" if "range" in problems else ("type" if "type" in problems else None)
    return None  # anything else (callables, objects, paths) is not checked here


def _base_words(hint) -> str:
    origin = get_origin(hint)
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is bool:
        return "true or false"
    if hint is str:
        return "a string"
    if hint is type(None):
        return "null"
    if origin in _SEQUENCES or hint in (list, tuple):
        args = [a for a in get_args(hint) if a is not Ellipsis]
        if args and Ellipsis not in get_args(hint) and origin is tuple and len(args) > 1:
            return f"a list of {len(args)} values"
        if args:
            element = _base_words(args[0])
            plural = {"an integer": "integers", "a number": "numbers", "a string": "strings",
                      "true or false": "booleans"}.get(element, element)
            return f"a list of {plural}"
        return "a list"
    return "a value"


def describe(hint) -> str:
    """What `hint` accepts, in words: 'an integer >= 1', 'a non-empty list of integers >= 1',
    'one of ddpm, ddim', 'an integer >= 1, a number in (0, 1] or null'."""
    origin = get_origin(hint)
    if origin is Annotated:
        base, *metadata = get_args(hint)
        constraints = [m for m in metadata if isinstance(m, Constraint)]
        choices = [c for c in constraints if isinstance(c, OneOf)]
        if choices and not _is_sequence_hint(base):
            return choices[0].describe()
        words = describe(base)
        if NonEmpty in constraints:
            words = words.replace("a list", "a non-empty list", 1)
        for constraint in constraints:
            if isinstance(constraint, Range):
                words += f" {constraint.describe()}"
            elif isinstance(constraint, OneOf):
                words += f" ({constraint.describe()})"
        return words
    if origin in _UNION_TYPES:
        parts = [describe(a) for a in get_args(hint) if a is not type(None)]
        if type(None) in get_args(hint):
            parts.append("null")
        return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]
    if origin is Literal:
        return OneOf(get_args(hint)).describe()
    return _base_words(hint)


def _is_sequence_hint(hint) -> bool:
    return get_origin(hint) in _SEQUENCES or hint in (list, tuple)


def checkable(hint) -> bool:
    """Whether `check_value` can say anything about values of `hint`."""
    origin = get_origin(hint)
    if origin is Annotated:
        return True
    if origin in _UNION_TYPES:
        return any(checkable(a) for a in get_args(hint) if a is not type(None))
    if origin is Literal or _is_sequence_hint(hint):
        return True
    return hint in (int, float, bool, str)


def check_value(key: str, value: Any, hint) -> Any:
    """`value` if it fits `hint`, else a GenlabError naming the key, the value and what is
    valid, e.g. "data.batch_size=0 is out of range: it must be an integer >= 1."."""
    problem = _problem(value, hint)
    if problem is None:
        return value
    shown = yaml_repr(list(value) if isinstance(value, tuple) else value)
    what = "is out of range" if problem == "range" else "is not valid"
    raise GenlabError(f"{key}={shown} {what}: it must be {describe(hint)}.")
