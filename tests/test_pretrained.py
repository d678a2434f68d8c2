"""The pretrained aisfx preset: its checkpoint read without torch, the keras rebuild against the
package's own torch outputs (tests/reference/), fine-tuning through a real fold, and what a user sees
when the weights are not installed."""
import dataclasses
import importlib.util
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from src import train
from src.base.config import PRESETS
from src.base.errors import SetupError, UsageError
from src.base.layout import Paths
from src.models import pretrained
from src.models.torch_checkpoint import read_checkpoint
from src.training.fold_files import fold_files

REFERENCE = Path(__file__).parent / "reference" / "aisfx_reference.npz"
needs_weights = pytest.mark.skipif(importlib.util.find_spec("aisfx") is None,
                                   reason="aisfx weights not installed (pip install --no-deps -r "
                                          "requirements-pretrained.txt; .ci/run does)")


@needs_weights
def test_checkpoint_reads_without_torch_into_the_state_dict():
    state, datasets = read_checkpoint(pretrained.WEIGHTS["aisfx"].path())
    assert state["embedding_net.conv_block1.conv1.weight"].shape == (64, 1, 3, 3)
    assert state["embedding_net.conv_block4.conv2.weight"].shape == (512, 512, 3, 3)
    assert state["embedding_net.conv_block1.bn1.num_batches_tracked"] == 113832
    embedding = sum(v.size for k, v in state.items() if k.startswith("embedding_net") and v.dtype == np.float32)
    assert embedding == 4_682_304 + 4 * 2 * 960  # 8 conv kernels; 8 batch norms' 4 vectors, 960 channels a pair
    assert datasets["prosfx"] == (0, 78)


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    class Exploit:
        def __reduce__(self):
            import os
            return os.system, ("echo pwned",)

    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(Exploit(), protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        read_checkpoint(path)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model.bin", io.BytesIO(b"x").getvalue())
    with pytest.raises(ValueError, match="not a torch.save archive"):
        read_checkpoint(path)


@needs_weights
def test_rebuilt_network_and_front_end_match_the_package():
    """Reference outputs of the package's own torch model and librosa front end, made once by
    tests/reference/make_aisfx_reference.py."""
    from src.models.aisfx_cnn import embedding_network, pretrained_state
    from src.models.layers import SfxMel

    reference = np.load(REFERENCE)
    net = embedding_network(96, pretrained_state())
    inputs = np.transpose(reference["inputs"], (0, 2, 1))[..., None]           # (batch, bands, frames, 1)
    embeddings = np.asarray(net(inputs, training=False))
    np.testing.assert_allclose(embeddings, reference["embeddings"], atol=1e-4, rtol=1e-5)
    front_end = SfxMel(44100, 2048, 1024, 96)
    spectrogram = np.asarray(front_end(reference["wave"][None].astype(np.float32) / 32768))[0]
    np.testing.assert_allclose(spectrogram.T, reference["spectrogram"], atol=1e-4)
    # Per example, not per batch: a quiet copy of the signal has the same (peak-normalised) spectrogram.
    wave = reference["wave"].astype(np.float32) / 32768
    pair = np.asarray(front_end(np.stack([wave, wave / 8])))
    np.testing.assert_allclose(pair[1], pair[0], atol=1e-5)


def test_missing_weights_say_how_to_install_them(clean_dataset, tmp_path, monkeypatch, capsys):
    absent = dataclasses.replace(pretrained.WEIGHTS["aisfx"], package="freesound-no-such-weights")
    with pytest.raises(SetupError, match=r"pip install --no-deps -r requirements-pretrained.txt"):
        absent.path()
    monkeypatch.setitem(pretrained.WEIGHTS, "aisfx", absent)
    # Before any caching: prepare is what run_folds.sh calls first.
    assert train.main(["--model", "aisfx", "--prepare", "--data-dir", str(clean_dataset),
                       "--out-dir", str(tmp_path / "out")]) == 2
    message = capsys.readouterr().err
    assert "freesound-no-such-weights package, which is not installed" in message and "CC BY 4.0" in message
    assert not (clean_dataset / "cache").exists()


def test_rebuilt_input_must_be_the_pretraining_input():
    from src.models import build_model

    with pytest.raises(UsageError, match="expect sample-rate 44100, n-mels 96; got sample-rate 22050, n-mels 64"):
        build_model(dataclasses.replace(PRESETS["aisfx"], sample_rate=22050, n_mels=64), 3)


def test_warm_up_rises_to_the_learning_rate_then_the_schedule_runs():
    from src.models import build_model

    config = dataclasses.replace(PRESETS["logmel"], warmup_epochs=2, epochs=6, learning_rate=0.01)
    schedule = build_model(config, 3, steps_per_epoch=5).optimizer._learning_rate
    assert [round(float(schedule(s)), 6) for s in (0, 5, 10)] == [0.0, 0.005, 0.01]
    assert float(schedule(30)) == pytest.approx(0.0, abs=1e-7)                  # cosine to 0 at the end
    constant = build_model(dataclasses.replace(config, schedule="constant"), 3, steps_per_epoch=5)
    assert float(constant.optimizer._learning_rate(25)) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="warmup_epochs must be within"):
        dataclasses.replace(config, warmup_epochs=6)


def test_contradictory_options_are_a_message_not_a_traceback(clean_dataset, tmp_path, capsys):
    assert train.main(["--model", "aisfx", "--fold", "0", "--epochs", "2", "--data-dir", str(clean_dataset),
                       "--out-dir", str(tmp_path)]) == 2
    assert "--model aisfx with these options: warmup_epochs must be within [0, epochs=2)" in capsys.readouterr().err


@pytest.mark.slow
@needs_weights
def test_aisfx_fold_fine_tunes_from_the_pretrained_weights(clean_dataset, tmp_path):
    import keras

    from src.models.aisfx_cnn import pretrained_state

    paths = Paths(clean_dataset, tmp_path / "out")
    assert train.main(["--model", "aisfx", "--fold", "0", "--n-folds", "2", "--epochs", "3", "--batch-size", "8",
                       "--data-dir", str(clean_dataset), "--out-dir", str(paths.out_dir)]) == 0
    files = fold_files(paths, "aisfx", 0)
    result = files.read_result()
    assert result["epochs_run"] == 3 and 0 <= result["val_map3"] <= 1
    model = keras.saving.load_model(files.model)
    tuned = model.get_layer("aisfx_embedding").get_layer("block3_conv2").get_weights()[0]
    start = np.transpose(pretrained_state()["embedding_net.conv_block3.conv2.weight"], (3, 2, 1, 0))
    # Started from the checkpoint and moved a little: a few small steps after the warm-up's zero rate.
    assert 0 < np.abs(tuned - start).max() < 0.01
    assert np.corrcoef(tuned.ravel(), start.ravel())[0, 1] > 0.99
