"""Loading either process's settings at start-up: groups read from the environment, errors by name.

A process's settings are a frozen model whose every field is a group: a `BaseSettings` reading
its own environment prefix. A field reads `<group prefix><FIELD NAME>`, or its
`validation_alias` when it has one. `load_settings` builds every group, so one start-up reports
every bad variable at once, by the variable's name, and exits with status 2, without a traceback.
"""

from __future__ import annotations

import re
import sys
from typing import Any, TypeVar

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

SettingsT = TypeVar("SettingsT", bound=BaseModel)
EXIT_BAD_SETTINGS = 2


def group_config(prefix: str) -> SettingsConfigDict:
    """The config of one group: its environment prefix, frozen once built."""
    return SettingsConfigDict(env_prefix=prefix, frozen=True)


def settings_groups(cls: type[BaseModel]) -> dict[str, type[BaseSettings]]:
    """The groups a process's settings are made of, by attribute name."""
    groups: dict[str, type[BaseSettings]] = {}
    for name, info in cls.model_fields.items():
        group = info.annotation
        if not (isinstance(group, type) and issubclass(group, BaseSettings)):
            raise TypeError(f"{cls.__name__}.{name} is not a settings group")
        groups[name] = group
    return groups


def env_name(group: type[BaseSettings], field: str) -> str:
    """The environment variable one field of a group reads."""
    alias = group.model_fields[field].validation_alias
    if isinstance(alias, str):
        return alias.upper()
    return f"{group.model_config.get('env_prefix', '')}{field}".upper()


def env_names(cls: type[BaseModel]) -> dict[str, tuple[str, str]]:
    """Every variable the settings read → (group attribute, field name)."""
    return {
        env_name(group, field): (name, field)
        for name, group in settings_groups(cls).items()
        for field in group.model_fields
    }


def _field_of(group: type[BaseSettings], loc: str) -> str | None:
    """The field an error location names: the field itself, or its alias."""
    for field, info in group.model_fields.items():
        if loc == field or (
            isinstance(info.validation_alias, str) and loc == info.validation_alias
        ):
            return field
    return None


def describe(group: type[BaseSettings], error: Any) -> str:
    """One line per error: the variable, the value given (never a secret's) and what is wrong."""
    loc = [str(part) for part in error["loc"]]
    field = _field_of(group, loc[0]) if loc else None
    if field is None:
        return f"  {group.__name__}: {error['msg']}"
    where = env_name(group, field) + "".join(f"[{part}]" for part in loc[1:])
    secret = group.model_fields[field].annotation is SecretStr
    given = "" if secret or "input" not in error else f"={error['input']!r}"
    return f"  {where}{given}: {error['msg']}"


def _describe_parse_error(group: type[BaseSettings], exc: SettingsError) -> str:
    """pydantic-settings raises this (not a ValidationError) for a value that is not JSON."""
    found = re.search(r'field "([^"]+)"', str(exc))
    field = _field_of(group, found.group(1)) if found else None
    if field is None:
        return f"  {group.__name__}: {exc}"
    return f"  {env_name(group, field)}: not valid JSON (a list or object is expected)"


def load_settings(cls: type[SettingsT], what: str) -> SettingsT:
    """`cls` built from the environment, or exit 2 naming every bad variable (`what`: `CLOUD_*`)."""
    built: dict[str, BaseSettings] = {}
    problems: list[str] = []
    for name, group in settings_groups(cls).items():
        try:
            built[name] = group()
        except ValidationError as exc:
            problems.extend(describe(group, error) for error in exc.errors())
        except SettingsError as exc:
            problems.append(_describe_parse_error(group, exc))
    if problems:
        print(f"invalid {what} settings:", *problems, sep="\n", file=sys.stderr)
        raise SystemExit(EXIT_BAD_SETTINGS)
    return cls(**built)
