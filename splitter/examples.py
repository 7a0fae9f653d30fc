"""Small real models to try splitter on without a model file of your own.

Architectures come from ``keras.applications`` with ``weights=None`` (nothing is
downloaded); weights are seeded so every run builds the same model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

EXAMPLES = ("mobilenetv2", "resnet50", "densenet121", "branchy")


def build_example_model(kind: str = "mobilenetv2", seed: int = 0) -> Any:
    """Build one of :data:`EXAMPLES` with deterministic random weights."""
    import keras

    keras.utils.set_random_seed(seed)
    if kind == "mobilenetv2":
        return keras.applications.MobileNetV2(
            weights=None, input_shape=(96, 96, 3), alpha=0.35, classes=10
        )
    if kind == "resnet50":
        return keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)
    if kind == "densenet121":
        return keras.applications.DenseNet121(weights=None, input_shape=(32, 32, 3), classes=10)
    if kind == "branchy":
        return _branchy()
    raise ValueError(f"unknown example '{kind}'; choose one of {', '.join(EXAMPLES)}")


def _branchy() -> Any:
    """Two inputs, two outputs, a shared layer, a nested model and keras.ops arithmetic."""
    import keras

    image = keras.Input((16, 16, 3), name="image")
    extra = keras.Input((4,), name="extra")
    block = keras.Sequential(
        [keras.Input((16, 16, 3)), keras.layers.Conv2D(8, 3, padding="same", activation="relu")],
        name="stem",
    )
    x = block(image)
    y = keras.layers.Conv2D(8, 3, padding="same", name="branch")(x)
    x = keras.layers.Add(name="skip_add")([x, y])
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    shared = keras.layers.Dense(6, name="shared")
    a = shared(keras.layers.Dense(4, name="to4")(x))
    b = shared(extra)
    joined = keras.layers.Concatenate(name="join")([a, b]) * 0.5 + 1.0
    out_class = keras.layers.Dense(3, activation="softmax", name="cls")(joined)
    out_reg = keras.layers.Dense(1, name="reg")(a)
    return keras.Model([image, extra], [out_class, out_reg], name="branchy")


def write_example_model(path: Path | str, kind: str = "mobilenetv2") -> Path:
    """Save an example model as a ``.keras`` file and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    build_example_model(kind).save(path)
    return path
