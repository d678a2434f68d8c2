"""src.tools.bench, as README's "Speed" runs it, at tiny scale: every figure printed, the dataset untouched."""
import pytest
from conftest import run_module, write_dataset


def bench(*args, timeout=900):
    return run_module("src.tools.bench", *args, timeout=timeout, check=True).stdout


@pytest.mark.slow                                    # trains the model for its step timings
@pytest.mark.readme("src.tools.bench")
@pytest.mark.readme("src.tools.bench --models")
@pytest.mark.readme("src.tools.bench --repeat")
def test_bench_measures_the_cache_the_feeds_and_the_step_on_a_mirror(tmp_path):
    data = write_dataset(tmp_path / "data", per_class=4, n_test=3, bad_inputs=False)
    before = sorted(p.name for p in data.iterdir())
    out = bench(data, "--repeat", "2", "--models", "1d", "--clips", "16", "--rounds", "1")
    assert "audio cache, 24 train clips" in out and "cache build" in out      # 12 clips listed twice
    row = next(line for line in out.splitlines() if line.strip().startswith("1d "))
    assert row.split()[1].isdigit() and "MiB" in row                          # host feed crops/s ... peak RSS
    assert sorted(p.name for p in data.iterdir()) == before                  # no cache, no folds in the dataset


@pytest.mark.slow
@pytest.mark.readme("src.tools.bench --full-run")
def test_bench_full_run_times_every_stage_and_the_kernels_data_path(tmp_path):
    data = write_dataset(tmp_path / "data", per_class=4, n_test=3, bad_inputs=False)
    out = bench(data, "--full-run", "--full-run-folds", "2", "--full-run-epochs", "1", "--kernel-epochs", "1",
                timeout=1200)
    for stage in ("audio cache", "1d folds", "2d folds", "blend"):
        assert f"  {stage}" in out
    assert "1d folds: fit" in out and "2d folds: fit" in out and "s/epoch loading and resampling every batch" in out
