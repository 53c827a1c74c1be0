"""convert.keras: a Keras application or .keras/.h5 file -> SavedModel, for the converters that read one."""

from __future__ import annotations

from pydantic import Field

from builder.stage.convert import keras_sources
from builder.stage.steps.base import PlanScope, Step, StepContext, StepParams
from builder.util import remove
from builder.workdir import SOURCE_DIR

KERAS_WEIGHTS = f"{SOURCE_DIR}/weights.h5"


class KerasToSavedModel(Step):
    kind = "convert.keras"
    consumes = ("keras",)
    produces = "saved_model"
    summary = "Keras application or .keras/.h5 file -> SavedModel"

    class Params(StepParams):
        application: str | None = Field(None, description="the source's keras.applications model (else a file)")
        alpha: float | None = None
        input_shape: list[int] | None = Field(None, description="H, W, C: source.keras.input_shape or the input's")
        weights: bool = Field(False, description="the application's weights file was fetched (else random weights)")

    @classmethod
    def resolve_params(cls, scope: PlanScope, params: dict) -> dict:
        app = scope.source.keras
        if app is None:
            return {}
        return {"application": app.application, "alpha": app.alpha, "weights": app.weights != "none",
                "input_shape": app.input_shape or scope.recipe.input.shape[1:]}

    @classmethod
    def file_inputs(cls, params: dict) -> dict[str, str]:
        return {"weights": KERAS_WEIGHTS} if params.get("application") and params.get("weights") else {}

    def run(self, ctx: StepContext, params: Params) -> dict:
        out = ctx.output("model")
        if params.application is not None:
            extra = {"alpha": params.alpha} if params.alpha else {}
            model = keras_sources.keras_application(params.application, weights=None,
                                             weights_path=ctx.input("weights") if params.weights else None,
                                             input_shape=tuple(params.input_shape), **extra)
            if not params.weights:
                ctx.log.warning("Keras %s has RANDOM weights (weights: none): accuracy is not meaningful",
                                params.application)
        else:
            model = keras_sources.load_keras_file(ctx.input("model"))
        remove(out)
        keras_sources.save_keras(model, out)
        return {"application": params.application, "random_weights": bool(params.application and not params.weights)}
