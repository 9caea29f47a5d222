"""Where each ProfileRequest field is exposed: CLI flags, Argo workflow parameter, DGDR keys.

A field is declared once, in `steps/core/request.py`: its type, default, bounds and description in the
pydantic model, and an `Exposed(...)` in its `Annotated[...]` saying under which names users set it.
Everything else is generated here from that declaration: the request options of every `slaprof`
command, the workflow parameters of the `slaprof-profile` WorkflowTemplate (enums, and descriptions
with the default from the model), and the reader of DynamoGraphDeploymentRequests (v1alpha1 and its
`profile_sla` config, v1beta1). Adding a request field is one line in the model, plus its use.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

EMPTY_PARAM = "empty = from `request`, else the default"


def _paths(value: str | tuple[str, ...]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


class Exposed:
    """`Annotated` metadata of a ProfileRequest field: the names users set it by.

    flags: CLI spellings, the first shown first (a bool field is a switch: `--dry-run`).
    argo: a workflow parameter of the same name as the first flag (True), or of another flag's name.
    profile_sla: keys in Dynamo's profile_sla config (a v1alpha1 DGDR's `spec.profilingConfig.config`,
        or a bare file); camelCase, each segment's snake_case spelling read too; the first present wins.
    v1alpha1, v1beta1: keys in that DGDR version's `spec`; v1alpha1's win over profile_sla's.
    switch: the flags take no value and set the field to this; a DGDR key for it is a true/false.
    help, argo_help: the CLI's and the workflow parameter's text, when not the field's description.
    default_text: how to describe a default of None.
    choices: allowed values of a `str` field that a validator checks (a Literal field has its own), or a
        function returning them when asked (a registry that may grow, like the backends).
    dgdr_value: turns a DGDR value into ours; None drops it (Dynamo's `auto` where slaprof has none).
    """

    def __init__(
        self,
        *flags: str,
        argo: bool | str = False,
        profile_sla: str | tuple[str, ...] = (),
        v1alpha1: str | tuple[str, ...] = (),
        v1beta1: str | tuple[str, ...] = (),
        switch: object = None,
        help: str | None = None,
        argo_help: str | None = None,
        default_text: str | None = None,
        choices: tuple[str, ...] | Callable[[], tuple[str, ...]] | None = None,
        dgdr_value: Callable[[Any], Any] | None = None,
    ) -> None:
        if isinstance(argo, str) and f"--{argo}" not in flags:
            raise ValueError(f"workflow parameter {argo!r} must also be a CLI flag: one name per field and place")
        if argo is True and not flags:
            raise ValueError("a workflow parameter named after the first flag needs a flag")
        self.flags = flags
        self.argo: str | None = argo if isinstance(argo, str) else (flags[0][2:] if argo else None)
        self.profile_sla = _paths(profile_sla)
        self.v1alpha1 = _paths(v1alpha1)
        self.v1beta1 = _paths(v1beta1)
        self.switch = switch
        self.help = help
        self.argo_help = argo_help
        self.default_text = default_text
        self.choices = choices
        self.dgdr_value = dgdr_value


@dataclass(frozen=True)
class RequestField:
    """One leaf of ProfileRequest with its declaration."""

    path: str  # dotted, e.g. "sla.isl"
    info: FieldInfo
    exposed: Exposed

    @property
    def kind(self) -> type:
        """int, float, bool or str (a Literal or optional value is parsed as its base type)."""
        annotation = self.info.annotation
        args = [a for a in get_args(annotation) if a is not type(None)]
        if get_origin(annotation) is Literal:
            return type(args[0])
        if args:  # X | None
            annotation = args[0]
        return annotation if annotation in (int, float, bool) else str  # type: ignore[return-value]

    @property
    def choices(self) -> tuple[str, ...] | None:
        if get_origin(self.info.annotation) is Literal:
            return tuple(str(a) for a in get_args(self.info.annotation))
        if self.kind is bool:
            return ("true", "false")
        choices = self.exposed.choices
        return choices() if callable(choices) else choices

    @property
    def required(self) -> bool:
        return self.info.default is PydanticUndefined and self.info.default_factory is None

    @property
    def description(self) -> str:
        return self.info.description or self.path

    def default_text(self) -> str | None:
        """The default as users would write it, or None when there is nothing to show."""
        if self.required:
            return None
        default = self.info.default
        if default is None:
            return self.exposed.default_text
        if isinstance(default, bool):
            return str(default).lower()
        if isinstance(default, float) and default.is_integer():
            return str(int(default))
        return str(default)

    @property
    def dest(self) -> str:
        """The argparse attribute, named after the first flag as argparse would."""
        return self.exposed.flags[0][2:].replace("-", "_") if self.exposed.flags else ""

    def parse(self, text: str, name: str) -> Any:
        """The typed value of a non-empty text (a workflow parameter `name`), or a UserError naming it."""
        from slaprof.steps.core.errors import UserError

        text = text.strip()
        try:
            if self.kind is bool:
                if text.lower() not in ("true", "false"):
                    raise ValueError
                return text.lower() == "true"
            return self.kind(text)
        except ValueError:
            kind = {bool: "true or false", int: "an integer", float: "a number"}.get(self.kind, "text")
            raise UserError(f"workflow parameter {name}={text!r} must be {kind}") from None


def _walk(model: type[BaseModel], prefix: str = "") -> Iterator[RequestField]:
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _walk(annotation, f"{prefix}{name}.")
            continue
        exposed = next((m for m in info.metadata if isinstance(m, Exposed)), Exposed())
        yield RequestField(f"{prefix}{name}", info, exposed)


def request_fields() -> list[RequestField]:
    """Every leaf field of ProfileRequest, in declaration order (looked up now, so an extended model counts)."""
    from slaprof.steps.core import request

    return list(_walk(request.ProfileRequest))


# ---------------------------------------------------------------------------
# nested dicts by dotted path
# ---------------------------------------------------------------------------
def set_path(target: dict[str, Any], path: str, value: Any) -> None:
    """target["a"]["b"] = value for path "a.b", creating the levels between; None sets nothing."""
    if value is None:
        return
    *parents, leaf = path.split(".")
    for part in parents:
        target = target.setdefault(part, {})
    target[leaf] = value


def get_path(source: Any, path: str, snake_too: bool = False) -> Any:
    """source["a"]["b"] for path "a.b", or None; with snake_too each camelCase key's snake_case spelling too."""
    node = source
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        value = node.get(part)
        if value is None and snake_too:
            value = node.get(_snake(part))
        node = value
    return node


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


# ---------------------------------------------------------------------------
# conventions Dynamo's flags and DGDRs share
# ---------------------------------------------------------------------------
def _implied(out: dict[str, Any]) -> dict[str, Any]:
    """AI Configurator estimates offline, and its system names the GPU unless one is given."""
    sweep = out.get("sweep") or {}
    if sweep.get("estimator") == "aic":
        out.setdefault("method", "offline")
    if sweep.get("aic_system") and "gpu" not in (out.get("hardware") or {}):
        set_path(out, "hardware.gpu", sweep["aic_system"])
    return out


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------
def cli_help(field: RequestField, show_default: bool = True) -> str:
    text = field.exposed.help or field.description
    default = field.default_text() if show_default else None
    if default is None or field.kind is bool or field.exposed.switch is not None:
        return text
    if text.endswith(")"):  # "... (0 = one node)" reads on as "(0 = one node; default: 0)"
        return f"{text[:-1]}; default: {default})"
    return f"{text} (default: {default})"


_METAVARS: dict[type, str] = {int: "N", float: "X"}


def add_option(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    field: RequestField,
    *,
    required: bool = False,
    default: Any = None,
    show_default: bool = True,
) -> None:
    """The field's CLI option; values are checked when the request is built (one line, exit 2), so
    the choices are shown, not enforced by argparse."""
    flags, help_text = field.exposed.flags, cli_help(field, show_default)
    if field.kind is bool:
        parser.add_argument(*flags, action="store_true", default=default, dest=field.dest, help=help_text)
    elif field.exposed.switch is not None:
        parser.add_argument(
            *flags, action="store_const", const=field.exposed.switch, default=default, dest=field.dest, help=help_text
        )
    else:
        choices = field.choices
        parser.add_argument(
            *flags,
            type=field.kind,
            default=default,
            required=required,
            dest=field.dest,
            metavar="{" + ",".join(choices) + "}" if choices else _METAVARS.get(field.kind),
            help=help_text,
        )


def add_request_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Every field that has a flag; each defaults to 'not given' so a request file's values survive."""
    for field in request_fields():
        if field.exposed.flags:
            add_option(parser, field)


def cli_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Nested request values of the flags given."""
    out: dict[str, Any] = {}
    for field in request_fields():
        if field.exposed.flags:
            set_path(out, field.path, getattr(args, field.dest, None))
    return _implied(out)


def field_by_path(path: str) -> RequestField:
    """The declaration of one field by dotted path."""
    for candidate in request_fields():
        if candidate.path == path:
            return candidate
    raise KeyError(path)


def add_field_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    required: tuple[str, ...] = (),
    optional: tuple[str, ...] = (),
    defaults: bool = True,
) -> None:
    """Options of a command that takes some request fields rather than a request: required ones, and
    optional ones defaulting to the request's defaults (or to 'not given', with no default shown)."""
    for path in required:
        add_option(parser, field_by_path(path), required=True, show_default=False)
    for path in optional:
        spec = field_by_path(path)
        default = spec.info.default if defaults and not spec.required else None
        add_option(parser, spec, default=default, show_default=defaults)


def check_values(args: argparse.Namespace, paths: tuple[str, ...]) -> None:
    """A UserError naming the flag of the first value its field refuses (choices, bounds)."""
    from pydantic import TypeAdapter, ValidationError

    from slaprof.steps.core.errors import UserError

    for path in paths:
        spec = field_by_path(path)
        value = getattr(args, spec.dest, None)
        if value is None:
            continue
        choices = spec.choices
        if choices is not None and spec.kind is not bool and str(value) not in choices:
            raise UserError(f"{spec.exposed.flags[0]} {value!r} is not one of: {', '.join(choices)}")
        adapter: TypeAdapter[Any] = TypeAdapter(Annotated[(spec.info.annotation, *spec.info.metadata)])  # type: ignore[arg-type]
        try:
            adapter.validate_python(value)
        except ValidationError as exc:
            raise UserError(f"{spec.exposed.flags[0]} {value!r}: {exc.errors()[0]['msg']}") from None


# ---------------------------------------------------------------------------
# Argo workflow parameters
# ---------------------------------------------------------------------------
def argo_description(field: RequestField) -> str:
    """The parameter's description; the default comes from the model, never copied."""
    text = field.exposed.argo_help or field.description
    if field.required:
        return text
    default = field.default_text()
    return f"{text}; {EMPTY_PARAM}" + (f" ({default})" if default is not None else "")


# ---------------------------------------------------------------------------
# DynamoGraphDeploymentRequest
# ---------------------------------------------------------------------------
def _dgdr_value(field: RequestField, value: Any) -> Any:
    if value is None:
        return None
    if field.exposed.switch is not None and field.kind is not bool:
        return field.exposed.switch if value else None
    return field.exposed.dgdr_value(value) if field.exposed.dgdr_value else value


def _read(field: RequestField, source: Any, paths: tuple[str, ...], snake_too: bool = False) -> Any:
    """The field's value from the first of its DGDR keys that gives one."""
    for path in paths:
        value = _dgdr_value(field, get_path(source, path, snake_too))
        if value is not None:
            return value
    return None


def from_profile_sla(config: dict[str, Any]) -> dict[str, Any]:
    """Our nested request dict from Dynamo's profile_sla config."""
    return from_v1alpha1_spec({"profilingConfig": {"config": config}})


def from_v1alpha1_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Our nested request dict from a v1alpha1 DGDR's spec (its profilingConfig.config already parsed)."""
    config = get_path(spec, "profilingConfig.config") or {}
    out: dict[str, Any] = {}
    for field in request_fields():
        value = _read(field, spec, field.exposed.v1alpha1)
        if value is None:
            value = _read(field, config, field.exposed.profile_sla, snake_too=True)
        set_path(out, field.path, value)
    return _implied(out)


def from_v1beta1_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Our nested request dict from a v1beta1 DGDR's spec."""
    out: dict[str, Any] = {}
    for field in request_fields():
        set_path(out, field.path, _read(field, spec, field.exposed.v1beta1))
    return _implied(out)
