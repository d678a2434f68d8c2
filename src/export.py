"""Stage 8, export: a trained preset as one inference artifact. Its fold models blended by geometric mean, with
the preset's front end inside, taking raw mono float audio in [-1, 1] at the preset's sample rate,
crop_seconds long (batch x samples), and giving class probabilities.

    python -m src.export 2d                       # -> exported/2d/ (TensorFlow SavedModel)
    python -m src.export 1d --out /tmp/tagger_1d

The SavedModel serves `serve(audio)`; its labels are written beside it in labels.txt. Load it with
`tf.saved_model.load(path)` or `keras.layers.TFSMLayer(path, call_endpoint="serve")`. Longer
recordings are cut into windows first (src.predict does this for the Keras models).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .base import backend, cli
from .base.config import Config
from .base.errors import SetupError
from .base.files import Lock, atomic_folder
from .base.layout import Paths
from .dataset.task import SINGLE_LABEL, Task
from .training.trained import load_members


def inference_model(config: Config, fold_models: list, task: Task = SINGLE_LABEL):
    """raw audio -> front end -> every fold model -> geometric mean, as one keras.Model (each row
    renormalised where the task has one label per clip; a multi-label model's labels keep their own
    probabilities)."""
    import keras
    from keras import ops

    from .models import front_end

    audio = keras.Input(shape=(config.crop_samples,), name="audio")
    inputs = front_end(config)(audio)
    # Each fold gets a name of its own: the models all share their network's name.
    folds = [keras.Model(m.inputs[0], m.outputs[0], name=f"fold{k}") for k, m in enumerate(fold_models)]
    logs = [ops.log(ops.maximum(fold(inputs), 1e-7)) for fold in folds]
    mean = ops.exp(sum(logs) / len(logs))
    probs = mean / ops.sum(mean, axis=-1, keepdims=True) if task.normalize else mean
    return keras.Model(audio, probs, name=f"tagger_{config.name}")


def export(paths: Paths, preset: str, out: Path, allow_mismatch: bool = False, allow_partial: bool = False) -> Path:
    """Write the SavedModel of one preset's folds to `out`, with labels.txt and config.json: whole or not
    at all (built beside it, then renamed into place; an earlier export stays until then). Its folds must
    be every fold of its dataset (src.training.run_folder), unless allow_partial, and not stale against
    the dataset under --data-dir when it is there, unless allow_mismatch."""
    if not backend.has_tensorflow():
        raise SetupError("src.export writes a TensorFlow SavedModel, which needs TensorFlow: "
                        "pip install tensorflow (any backend may stay the one that trains). The fold "
                        "models themselves (predictions/MODEL/fold*/best.keras) load on any backend.")
    member = load_members(paths, [preset], allow_partial, allow_mismatch)[0]
    model = inference_model(member.config, member.models, member.task)
    out = Path(out)
    with Lock(out.with_name(out.name + ".lock"), f"src.export {preset}"), atomic_folder(out) as building:
        model.export(str(building), format="tf_saved_model", verbose=False)
        (building / "labels.txt").write_text("\n".join(member.labels) + "\n")
        (building / "config.json").write_text(json.dumps(
            {**member.config.to_dict(), "folds": len(member.models), "fold_ids": member.folds,
             "input": f"float32 audio (batch, {member.config.crop_samples})",
             "output": member.task.output_note}, indent=2) + "\n")
    return out


@cli.command
def main(argv=None) -> int:
    parser = cli.parser("python -m src.export", __doc__)
    parser.add_argument("model", help="the preset to export (its finished folds)")
    parser.add_argument("--out", type=Path, help="folder of the SavedModel (default: OUT_DIR/exported/MODEL)")
    parser.add_argument("--allow-mismatch", action="store_true", help="export folds trained on different train "
                        "rows or folds, or on other rows or folds than the dataset under --data-dir has now "
                        "(stopped otherwise)")
    parser.add_argument("--allow-partial", action="store_true", help="export the finished folds of a preset whose "
                        "folds are not all finished (stopped otherwise)")
    args = parser.parse_args(argv)
    paths = cli.paths(args)
    out = export(paths, args.model, args.out or paths.exported_dir(args.model), args.allow_mismatch,
                 args.allow_partial)
    member_folds = json.loads((out / "config.json").read_text())["fold_ids"]
    print(f"exported {args.model} (folds {' '.join(map(str, member_folds))}) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
