"""The commands around the pipeline's stages: explore, adapters, cluster, bench, demo
(`python -m src.tools.NAME --help`)."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout: run_folds.sh and data/demo live here
