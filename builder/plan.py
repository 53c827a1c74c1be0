"""A plan: the step calls a recipe x target resolves to, as the host writes it (builder.host.planner) and a
stage reads it (builder.stage.execute)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from builder.config.recipe import Recipe, Source
from builder.config.target import Target


@dataclass
class StepCall:
    """One resolved step of a plan. Paths are relative to the work directory."""

    id: str
    kind: str
    stage: str
    variant: str | None = None
    inputs: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)



@dataclass
class Plan:
    recipe: Recipe
    target: Target
    source: Source
    variants: list[str]
    skipped: dict[str, str] = field(default_factory=dict)
    steps: list[StepCall] = field(default_factory=list)
    artifacts: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    trust_remote_code: bool = False  # the user runs the recipe's own code (--trust-remote-code)

    def to_json(self) -> dict:
        return {
            "recipe": self.recipe.model_dump(mode="json"),
            "target": self.target.model_dump(mode="json"),
            "source": self.source.model_dump(mode="json"),
            "variants": self.variants,
            "skipped": self.skipped,
            "artifacts": self.artifacts,
            "notes": self.notes,
            "trust_remote_code": self.trust_remote_code,
            "steps": [dataclasses.asdict(s) for s in self.steps],
        }

    @classmethod
    def from_json(cls, data: dict) -> Plan:
        return cls(
            recipe=Recipe.model_validate(data["recipe"]),
            target=Target.model_validate(data["target"]),
            source=Source.model_validate(data["source"]),
            variants=data["variants"],
            skipped=data["skipped"],
            artifacts=data["artifacts"],
            notes=data["notes"],
            trust_remote_code=data.get("trust_remote_code", False),
            steps=[StepCall(**s) for s in data["steps"]],
        )

    def stage_steps(self, stage: str) -> list[StepCall]:
        return [s for s in self.steps if s.stage == stage]
