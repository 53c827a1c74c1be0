"""Option sections: a backend's own options in a recipe or target, under one key of a source, a variant or a
target (a variant's options for a backend's quantizer, a target's for how its runtime wants int8 made).

A backend declares the section's model and registers it here; the recipe's and target's models consult this
registry when they validate (`Sectioned`), so a section stays where users write it, its errors name its file,
field and line like any other field's, and `builder schema` documents it. The core names none of them: the step
that owns the options reads them from its scope (`owner.section(key)`) into its params, so the plan shows them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, SerializationInfo, ValidationError, ValidationInfo, model_serializer, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError, core_schema

from builder import plugins
from builder.config.common import Strict

Owner = Literal["source", "variant", "target"]


@dataclass(frozen=True)
class Section:
    owner: Owner  # the part of a recipe or target that holds it
    key: str
    model: type[BaseModel]
    description: str
    optional: bool = False  # absent means None; otherwise absent means the model's defaults
    check: Callable[[Any, BaseModel], str | None] | None = None  # (its owner, the options) -> why they cannot apply


_REGISTRY: dict[str, dict[str, Section]] = {"source": {}, "variant": {}, "target": {}}


def register(section: Section) -> Section:
    known = _REGISTRY[section.owner].get(section.key)
    if known is not None and known != section:
        raise RuntimeError(f"option section {section.owner}.{section.key} registered twice")
    _REGISTRY[section.owner][section.key] = section
    return section


def of(owner: Owner) -> dict[str, Section]:
    plugins.load()
    return dict(_REGISTRY[owner])


_PYDANTIC_ERRORS = set(get_args(core_schema.ErrorType))  # rendered again from their context


def _line_errors(exc: ValidationError, prefix: tuple = ()) -> list[InitErrorDetails]:
    """`exc`'s errors, located under `prefix`, to raise again with others."""
    details = []
    for error in exc.errors():
        kind, ctx = error["type"], error.get("ctx")
        if kind not in _PYDANTIC_ERRORS:  # a custom error keeps its message as it is
            kind, ctx = PydanticCustomError(kind, error["msg"].replace("{", "{{").replace("}", "}}")), None
        details.append({"type": kind, "loc": prefix + tuple(error["loc"]), "input": error["input"],
                        **({"ctx": ctx} if ctx else {})})
    return details


def _problem(key: str, message: str, value: Any) -> InitErrorDetails:
    return {"type": "value_error", "loc": (key,), "input": value, "ctx": {"error": ValueError(message)}}


class Sectioned(Strict):
    """A config model that also holds the sections registered for its `section_owner`, typed, by their keys
    (other unknown keys are still errors). The registry is asked only when the data has keys the model lacks,
    so validating a file that names no section loads no plugin; a section not given reads as its defaults."""

    model_config = ConfigDict(extra="allow")
    section_owner: ClassVar[Owner]

    @model_validator(mode="wrap")
    @classmethod
    def _sections(cls, data: Any, handler, info: ValidationInfo):
        if not isinstance(data, dict):
            return handler(data)
        named = {key: value for key, value in data.items() if key not in cls.model_fields}
        sections = of(cls.section_owner) if named else {}
        errors, typed = [], {}
        for key, value in named.items():
            if key not in sections:
                errors.append({"type": "extra_forbidden", "loc": (key,), "input": value})
            elif value is None and sections[key].optional:
                typed[key] = None
            else:
                try:
                    typed[key] = sections[key].model.model_validate({} if value is None else value,
                                                                    context=info.context)
                except ValidationError as exc:
                    errors += _line_errors(exc, (key,))
        try:
            model = handler({k: v for k, v in data.items() if k not in named})
        except ValidationError as exc:
            errors = _line_errors(exc) + errors
        for key, options in typed.items() if not errors else ():
            check = sections[key].check
            if options is not None and check and (problem := check(model, options)):
                errors.append(_problem(key, problem, named[key]))
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        model.__pydantic_extra__.update(typed)
        return model

    @model_serializer(mode="wrap")
    def _with_defaults(self, handler, info: SerializationInfo) -> dict:
        """Every registered section, the ones not given at their defaults: what the plan's JSON shows."""
        data = handler(self)
        if info.include is None and info.exclude is None and not (info.exclude_defaults or info.exclude_unset):
            for key, section in of(self.section_owner).items():
                if key not in data and not (section.optional and info.exclude_none):
                    data[key] = None if section.optional else section.model().model_dump(mode=info.mode)
        return data

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: core_schema.CoreSchema, handler) -> dict:
        """The model's own fields, and each registered section's model under its key."""
        json_schema = handler(schema)
        own = handler.resolve_ref_schema(json_schema)
        for key, section in of(cls.section_owner).items():
            entry = handler(section.model.__pydantic_core_schema__)
            if section.optional:
                entry = {"anyOf": [entry, {"type": "null"}], "default": None}
            own.setdefault("properties", {})[key] = {**entry, "description": section.description}
        own["additionalProperties"] = False
        return json_schema

    def section(self, key: str) -> BaseModel | None:
        """The options of the registered section `key`: as given, else its defaults (None for an optional one)."""
        given = self.__pydantic_extra__ or {}
        if key in given:
            return given[key]
        section = of(self.section_owner).get(key)
        if section is None:
            raise KeyError(f"no option section {key!r} is registered for a {self.section_owner}")
        return None if section.optional else section.model()

    def __eq__(self, other: object) -> bool:
        """A section given at its defaults equals one not given (as a plan read back from its JSON has them)."""
        if type(other) is not type(self):
            return NotImplemented
        keys = set(self.__pydantic_extra__ or {}) | set(other.__pydantic_extra__ or {})
        return self.__dict__ == other.__dict__ and all(self.section(k) == other.section(k) for k in keys)

    __hash__ = Strict.__hash__

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name.startswith("_") or name not in of(self.section_owner):
                raise
            return self.section(name)
