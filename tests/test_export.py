import numpy as np
import pytest
from test_predict import make_models

from src import export
from src.base.config import PRESETS
from src.base.layout import Paths
from src.base.metrics import geometric_mean
from src.dataset.inputs import mfcc
from src.models import MfccFrontEnd
from src.predict import load_members


def test_mfcc_front_end_reproduces_the_cached_features():
    config = PRESETS["2d"]
    audio = (0.3 * np.random.default_rng(0).standard_normal(config.crop_samples)).astype(np.float32)
    front = MfccFrontEnd(config.sample_rate, config.n_fft, config.hop_length, config.n_mels, config.n_mfcc)
    inside = np.asarray(front(audio[None]))[0, :, :, 0]
    np.testing.assert_allclose(inside, mfcc(audio, config).T, atol=1e-3)


@pytest.mark.parametrize("preset", ["1d", "2d"])
def test_exported_artifact_gives_the_keras_models_outputs(tmp_path, preset):
    tf = pytest.importorskip("tensorflow", reason="a SavedModel needs TensorFlow")

    make_models(tmp_path / "out")
    paths = Paths(tmp_path / "data", tmp_path / "out")
    out = export.export(paths, preset, tmp_path / "artifact")
    assert (out / "labels.txt").read_text().split() == ["Clicks", "Noise", "Tone"]

    member = load_members(paths, [preset])[0]
    config = member.config
    audio = (0.2 * np.random.default_rng(1).standard_normal((3, config.crop_samples))).astype(np.float32)
    artifact = tf.saved_model.load(str(out))  # kept referenced: its variables live as long as it does
    served = artifact.serve(tf.constant(audio)).numpy()
    in_keras = np.asarray(export.inference_model(config, member.models)(audio))
    np.testing.assert_allclose(served, in_keras, atol=1e-5)

    # And the same as the fold models fed the way training fed them, blended like src.blend.
    if preset == "1d":
        fed = np.round(audio * 32768).clip(-32768, 32767).astype(np.int16)[..., None]
    else:
        fed = np.stack([mfcc(a, config).T[..., None] for a in audio])
    expected = geometric_mean([m.predict(fed, verbose=0) for m in member.models])
    np.testing.assert_allclose(served, expected, atol=1e-4)


@pytest.mark.readme("src.export")
def test_export_refuses_folds_stale_against_the_dataset_unless_allowed(tmp_path, capsys):
    pytest.importorskip("tensorflow", reason="a SavedModel needs TensorFlow")
    from test_predict import stale_setup

    paths, _ = stale_setup(tmp_path)
    options = ["1d", "--data-dir", str(paths.data_dir), "--out-dir", str(paths.out_dir)]
    assert export.main(options) == 2
    err = capsys.readouterr().err
    assert "trained on other rows than the dataset has now" in err and "--allow-mismatch" in err
    assert not paths.exported_dir("1d").exists()
    assert export.main([*options, "--allow-mismatch"]) == 0
    assert (paths.exported_dir("1d") / "labels.txt").exists()
