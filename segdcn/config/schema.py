"""The base of every settings dataclass: type and value checks that name the key as a user types it.

A schema is a dataclass of fields with a type, a default and a one-line comment. Hydra's ConfigStore
reads it as a structured config (so a mistyped key stops the app at composition), and
`OmegaConf.to_object` or `Schema.from_config` turn a composed config, a dict or a dataclass into an
instance, whose `__post_init__` checks every value:

    ModelConfig.from_config({"dcn": {"layers": -1}})
    ConfigError: model.dcn.layers=-1: expected 0 or more

Each class says where it sits in the config tree (`KEY`, e.g. "model.dcn"), so its messages carry
the full key. Values still MISSING (`???`) are left to OmegaConf, which names them when they are read.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, TypeVar, Union

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from segdcn.errors import ConfigError

S = TypeVar("S", bound="Schema")


def show(value: Any) -> str:
    """A value as it would be typed on the command line (null, true, 'text', [1, 2])."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return repr(value)


def _describe(hint: Any) -> str:
    if hint is Any:
        return "any value"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        parts = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s" if args else "a list"
    if origin is dict:
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def _conforms(value: Any, hint: Any) -> tuple[bool, Any]:
    """Whether `value` has the type `hint`, and the value to store (an int where a float is asked for
    becomes a float; a tuple where a list is asked for becomes a list)."""
    if hint is Any:
        return True, value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None:
            return type(None) in args, None
        for arg in args:
            if arg is type(None):
                continue
            ok, converted = _conforms(value, arg)
            if ok:
                return True, converted
        return False, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if hint is str:
        return isinstance(value, str), value
    if origin is list:
        if not isinstance(value, list | tuple):
            return False, value
        items = []
        for item in value:
            ok, converted = _conforms(item, args[0]) if args else (True, item)
            if not ok:
                return False, value
            items.append(converted)
        return True, items
    if origin is dict:
        return isinstance(value, Mapping), dict(value) if isinstance(value, Mapping) else value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return isinstance(value, hint), value
    return True, value


_unchecked = contextvars.ContextVar("segdcn_schema_unchecked", default=False)


@contextlib.contextmanager
def unchecked():
    """Builds the schemas' own defaults without their checks: registering the schemas with Hydra
    instantiates every default, and the checks import torch (tests check that the defaults pass)."""
    token = _unchecked.set(True)
    try:
        yield
    finally:
        _unchecked.reset(token)


def is_missing(value: Any) -> bool:
    return isinstance(value, str) and value == MISSING


@dataclasses.dataclass
class Schema:
    """Base of the settings dataclasses. Subclasses set KEY and override `check` for ranges, choices
    and rules between fields; types are checked here from the annotations."""

    KEY: ClassVar[str] = ""
    ERROR: ClassVar[type[Exception]] = ConfigError  # the dataset's schema raises DatasetConfigError

    def __post_init__(self) -> None:
        if _unchecked.get():
            return
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if is_missing(value):
                continue
            ok, converted = _conforms(value, hints[field.name])
            if not ok:
                raise self.error(f"{self.key(field.name)}={show(value)}: expected {_describe(hints[field.name])}")
            setattr(self, field.name, converted)
        self.check()

    def check(self) -> None:
        """Value checks beyond the types; raise ConfigError through `self.fail`."""

    # ---- helpers for check() ----

    def key(self, name: str) -> str:
        return f"{self.KEY}.{name}" if self.KEY else name

    def is_set(self, *names: str) -> bool:
        return not any(is_missing(getattr(self, n)) for n in names)

    def error(self, message: str) -> Exception:
        return self.ERROR(message)

    def fail(self, name: str, expected: str) -> typing.NoReturn:
        raise self.error(f"{self.key(name)}={show(getattr(self, name))}: expected {expected}")

    def choice(self, name: str, allowed: Iterable[Any]) -> None:
        allowed = tuple(allowed)
        if self.is_set(name) and getattr(self, name) not in allowed:
            self.fail(name, "one of " + ", ".join(map(str, allowed)))

    def at_least(self, name: str, low: float, what: str = "") -> None:
        value = getattr(self, name)
        if value is not None and self.is_set(name) and value < low:
            self.fail(name, f"{low:g} or more{what}")

    def pair(self, name: str, what: str) -> None:
        """A [height, width] of positive integers."""
        value = getattr(self, name)
        if value is not None and self.is_set(name) and (len(value) != 2 or min(value) < 1):
            self.fail(name, f"[height, width] of positive integers ({what})")

    def only_with(self, applies: str, *names: str) -> None:
        """Keys of a variant that is not chosen (SGD's momentum under AdamW) would be ignored: each must keep
        its default, else it is refused."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        for name in names:
            default = _default(fields[name])
            if getattr(self, name) != default:
                self.fail(name, f"{show(default)} (the default): the key applies to {applies} only")

    @classmethod
    def default_of(cls, name: str) -> Any:
        """The schema's default of its key `name` (a fresh one where a factory makes it)."""
        return _default({f.name: f for f in dataclasses.fields(cls)}[name])

    # ---- construction ----

    @classmethod
    def from_config(cls: type[S], cfg: Any) -> S:
        """An instance from a dict, a DictConfig or an instance; unknown and missing keys, wrong types
        and bad values raise ConfigError naming the key."""
        if isinstance(cfg, cls):
            return cfg
        if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
            cfg = dataclasses.asdict(cfg)
        if cfg is None:
            cfg = {}
        if isinstance(cfg, DictConfig):
            try:
                cfg = OmegaConf.to_container(cfg, resolve=True)
            except InterpolationResolutionError as error:
                raise _resolver_error(error) from None
        return _build(cls, cfg, cls.KEY)


def _resolver_error(error: InterpolationResolutionError) -> Exception:
    """The error a segdcn resolver raised (e.g. a folder dataset's missing class table) rather than OmegaConf's
    wrapper, which drops it as the cause but keeps it as the context; any other resolution error as it is."""
    inner = error.__context__
    while inner is not None:
        if type(inner).__module__.startswith("segdcn."):
            return inner
        inner = inner.__context__
    return error


def _build(cls: type[S], data: Any, key: str) -> S:
    if not isinstance(data, Mapping):
        raise cls.ERROR(f"{key}={show(data)}: expected a mapping with the keys {', '.join(_names(cls))}")
    unknown = sorted(set(data) - set(_names(cls)))
    if unknown:
        raise cls.ERROR(f"unknown key {key}.{unknown[0]}; {key} has the keys {', '.join(_names(cls))}")
    hints = typing.get_type_hints(cls)
    values = {}
    for field in dataclasses.fields(cls):
        if field.name not in data:
            if is_missing(field.default):
                raise cls.ERROR(f"missing key {key}.{field.name} (expected {_describe(hints[field.name])})")
            continue
        value, hint = data[field.name], hints[field.name]
        if isinstance(hint, type) and issubclass(hint, Schema):
            value = _build(hint, value if value is not None else {}, f"{key}.{field.name}")
        elif isinstance(value, Mapping) and isinstance(default := _default(field), dict):
            # a mapping merges into the default mapping, as Hydra merges a YAML file into the schema
            value = {**default, **value}
        values[field.name] = value
    return cls(**values)


def _default(field: dataclasses.Field) -> Any:
    """A field's default value (a fresh one from its default_factory)."""
    return field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default


def _names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]
