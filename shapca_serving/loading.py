"""Loading a trained Shap-CA folder (or Hub id) by its task: the one function the CLI, the
export, the demo app, training's resume and publishing call."""

from __future__ import annotations


def load_trained(name: str, trust_remote_code: bool = False, processor: bool = True):
    """`(model, processor)` of a saved Shap-CA model: by default this package's classes, chosen
    by the config's task (nothing from the folder runs); with `trust_remote_code=True` the
    folder's own code through `AutoModel` (for models whose code differs from this package's),
    and its processor with the same consent. `processor=False` returns `(model, None)`."""
    if trust_remote_code:
        from transformers import AutoModel

        model = AutoModel.from_pretrained(name, trust_remote_code=True)
    else:
        import modeling_shapca
        from modeling_shapca import ShapCAConfig
        from modeling_shapca.tasks import get_task

        config = ShapCAConfig.from_pretrained(name)
        model = getattr(modeling_shapca, get_task(config.task).model_class).from_pretrained(name)
    if not processor:
        return model, None
    from modeling_shapca.torch_runner import load_processor

    return model, load_processor(model, trust_remote_code)


__all__ = ["load_trained"]
