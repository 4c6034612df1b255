"""A provider's ``--cloud-config``: a pydantic model read from YAML, JSON or the INI dialect
(gcfg) of upstream Go providers, with one-line errors that name the file and the field.

::

    from typing import Annotated
    from pydantic import Field
    from ccm.cloudprovider.config import Duration, ProviderConfig, Secret

    class Retries(ProviderConfig):
        attempts: Annotated[int, Field(ge=1)] = 4
        initial_backoff: Duration = 0.2          # YAML: initialBackoff: 200ms

    class MyCloudConfig(ProviderConfig):
        endpoint: str
        token: Secret | None = None              # "file:/etc/ccm/token", "env:MYCLOUD_TOKEN"
        retries: Retries = Retries()

    def factory(data: bytes | None) -> MyCloud:
        return MyCloud(MyCloudConfig.load(data))

Field names are snake_case in Python and camelCase in YAML/JSON (both spellings are accepted; a
trailing ``_``, as in ``global_``, is dropped from the camelCase name). Unknown keys are ignored, as
upstream's readers do (set ``model_config["extra"] = "forbid"`` in a subclass to refuse them). In
the INI form each section is a field holding a ``ProviderConfig`` (``[Global]`` →
``global_: GlobalSection``), a section with subsections a ``dict[str, Section]``
(``[ServiceOverride "1"]`` → ``service_override["1"]``), and a repeated variable fills a ``list``
field (any other field takes the last value); section and variable names match field names ignoring
case, ``-`` and ``_``. The model's own scalar fields come from the section named by
``ini_root_section``, if any. See :mod:`ccm.cloudprovider.gcfg` for the syntax.

Every problem is a :class:`ccm.errors.ConfigFileError` in one line:
``/etc/ccm/cloud.yaml: retries.attempts: Input should be greater than or equal to 1``. The file is
the ``--cloud-config`` path when the daemon builds the provider, else ``source=``.

This module imports pydantic: import it as ``ccm.cloudprovider.config`` (``ccm.cloudprovider`` does
not load it, so providers without a config model do not pay for it).
"""

from __future__ import annotations

import json
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

import pydantic
import yaml
from pydantic import BeforeValidator, ConfigDict, SecretStr
from pydantic.alias_generators import to_camel

from ccm.cloudprovider import gcfg
from ccm.cloudprovider.durations import parse_duration
from ccm.cloudprovider.registry import cloud_config_path
from ccm.errors import ConfigFileError

__all__ = [
    "Duration",
    "Format",
    "ProviderConfig",
    "Secret",
    "parse_duration",
    "resolve_secret",
]

Format = Literal["auto", "yaml", "json", "ini"]


def _seconds(value: Any) -> Any:
    """Durations: a number of seconds, or a Go duration string (``1m30s``, ``500ms``)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 500ms or 1m30s")
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text)  # a bare number (INI values are strings): seconds
        except ValueError:
            pass
        try:
            return parse_duration(text)
        except ValueError:
            raise ValueError(
                f"invalid duration {value!r}: expected a duration such as 30s, 500ms or 1m30s"
            ) from None
    return value


#: Seconds, as a float; the file may say ``30``, ``30s``, ``500ms`` or ``1m30s``.
Duration = Annotated[float, BeforeValidator(_seconds)]


def resolve_secret(value: str) -> str:
    """The secret ``value`` names: ``file:PATH`` → the file's content without its final newline,
    ``env:NAME`` → the environment variable; anything else is the secret itself.

    Raises ``ValueError`` when the file cannot be read or the variable is not set.
    """
    if value.startswith("file:"):
        path = value.removeprefix("file:")
        try:
            return Path(path).read_text(encoding="utf-8").removesuffix("\n").removesuffix("\r")
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    if value.startswith("env:"):
        name = value.removeprefix("env:")
        if name not in os.environ:
            raise ValueError(f"environment variable {name} is not set")
        return os.environ[name]
    return value


def _secret(value: Any) -> Any:
    return resolve_secret(value) if isinstance(value, str) else value


#: A ``SecretStr`` (never printed, ``.get_secret_value()`` to use it) that the file may give
#: literally or as ``file:/path/to/token`` or ``env:VARIABLE`` (see :func:`resolve_secret`).
Secret = Annotated[SecretStr, BeforeValidator(_secret)]


def _alias(name: str) -> str:
    """``request_timeout`` → ``requestTimeout``; ``global_`` (a Python keyword) → ``global``."""
    return to_camel(name.rstrip("_"))


class ProviderConfig(pydantic.BaseModel):
    """Base of a provider's configuration model and of its sections (see the module docstring).

    Frozen; snake_case fields read from camelCase keys (or snake_case ones); unknown keys ignored.
    """

    model_config = ConfigDict(
        alias_generator=_alias, populate_by_name=True, extra="ignore", frozen=True
    )

    #: In the INI form, the section whose variables set the model's own scalar fields (INI has no
    #: variables outside sections): ``"Global"`` reads ``[Global] Endpoint = …`` into
    #: ``endpoint``. ``None``: only sections map to fields.
    ini_root_section: ClassVar[str | None] = None

    @classmethod
    def load(
        cls, data: bytes | str | None, *, source: str | None = None, format: Format = "auto"
    ) -> Self:
        """Parse and validate ``data``, the bytes of ``--cloud-config`` (``None`` or empty: every
        field takes its default).

        ``format="auto"`` reads INI when the first line that is not a comment is a section header
        (``[Global]``), JSON when it starts with ``{``, YAML otherwise. ``source`` names the file
        in errors (default: the ``--cloud-config`` path while the daemon builds the provider).
        Raises :class:`ccm.errors.ConfigFileError`.
        """
        where = source or cloud_config_path() or "cloud config"
        if isinstance(data, bytes):
            try:
                text = data.decode("utf-8").removeprefix("\ufeff")
            except UnicodeDecodeError as exc:
                raise ConfigFileError(where, f"not UTF-8: {exc.reason}") from exc
        else:
            text = (data or "").removeprefix("\ufeff")
        kind = _detect(text) if format == "auto" else format
        if kind == "ini":
            doc: Any = _from_gcfg(cls, gcfg.parse_gcfg(text, source=where), where)
        elif kind == "json":
            try:
                doc = json.loads(text) if text.strip() else {}
            except json.JSONDecodeError as exc:
                raise ConfigFileError(where, f"invalid JSON: {exc.msg}", line=exc.lineno) from exc
        else:
            doc = _load_yaml(text, where)
        if doc is None:
            doc = {}
        if not isinstance(doc, Mapping):
            raise ConfigFileError(where, f"expected a mapping at the top, not {_kind(doc)}")
        try:
            return cls.model_validate(doc)
        except pydantic.ValidationError as exc:
            raise _config_error(where, exc) from None

    @classmethod
    def load_file(cls, path: str | os.PathLike[str], *, format: Format = "auto") -> Self:
        """Read and :meth:`load` the file at ``path`` (blocking: call it before the event loop
        runs, or through ``run_blocking``)."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigFileError(str(path), exc.strerror or str(exc)) from exc
        return cls.load(data, source=str(path), format=format)


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def _detect(text: str) -> Format:
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("{"):
            return "json"
        if line.startswith("[") and gcfg.looks_like_header(line):
            return "ini"
        return "yaml"
    return "yaml"


def _load_yaml(text: str, where: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        line = mark.line + 1 if mark is not None else None
        raise ConfigFileError(where, f"invalid YAML: {problem}", line=line) from exc


def _config_error(where: str, exc: pydantic.ValidationError) -> ConfigFileError:
    """The first validation error, in one line naming the field."""
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    field = "".join(
        f"[{part}]" if isinstance(part, int) else (f".{part}" if i else str(part))
        for i, part in enumerate(first["loc"])
    )
    reason = str(first["msg"]).removeprefix("Value error, ")
    if len(errors) > 1:
        reason += f" (and {len(errors) - 1} more)"
    return ConfigFileError(where, reason, field=field or "(top level)")


# -- INI (gcfg) sections onto a model ------------------------------------------------------------


def _norm(name: str) -> str:
    return name.replace("-", "").replace("_", "").lower()


def _unwrap(annotation: Any) -> Any:
    """The type inside ``Annotated[...]`` and ``X | None``."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel)


def _fields(model: type[pydantic.BaseModel]) -> dict[str, tuple[str, Any]]:
    """Normalized name and alias → (field name, unwrapped annotation)."""
    out: dict[str, tuple[str, Any]] = {}
    for name, info in model.model_fields.items():
        entry = (name, _unwrap(info.annotation))
        out.setdefault(_norm(name), entry)
        if info.alias:
            out.setdefault(_norm(info.alias), entry)
    return out


def _is_multi(annotation: Any) -> bool:
    origin = typing.get_origin(annotation) or annotation
    return (
        isinstance(origin, type)
        and issubclass(origin, (list, tuple, set, frozenset, Sequence))
        and not issubclass(origin, (str, bytes))
    )


def _section(model: Any, variables: dict[str, list[str | None]]) -> dict[str, Any]:
    """A section's variables as input for ``model`` (a pydantic model class)."""
    fields = _fields(model) if _is_model(model) else {}
    out: dict[str, Any] = {}
    for key, values in variables.items():
        found = fields.get(_norm(key))
        if found is None:
            continue  # unknown variable: ignored, as upstream's readers do
        name, annotation = found
        if _is_multi(annotation):
            items: list[str] = []
            for value in values:
                if value is None:  # a value-less repeat resets the list (gcfg)
                    items = []
                else:
                    items.append(value)
            out[name] = items
        else:
            last = values[-1]
            out[name] = True if last is None else last  # value-less: an implicit true
    return out


def _from_gcfg(
    model: type[ProviderConfig], sections: gcfg.GcfgSections, where: str
) -> dict[str, Any]:
    fields = _fields(model)
    root = _norm(model.ini_root_section or "")
    doc: dict[str, Any] = {}
    for (section, sub), variables in sections.items():
        if root and _norm(section) == root and sub is None:
            doc.update(_section(model, variables))
        found = fields.get(_norm(section))
        if found is None:
            continue  # unknown section: ignored
        name, annotation = found
        origin = typing.get_origin(annotation) or annotation
        if isinstance(origin, type) and issubclass(origin, Mapping):
            args = typing.get_args(annotation)
            item = _unwrap(args[1]) if len(args) == 2 else None
            doc.setdefault(name, {})[sub or ""] = _section(item, variables)
        elif sub is not None:
            raise ConfigFileError(
                where, f'section [{section}] takes no subsection ("{sub}")', field=name
            )
        else:
            doc[name] = _section(annotation, variables)
    return doc
