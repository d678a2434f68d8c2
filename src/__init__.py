"""Freesound audio tagging: data -> audio cache -> features -> train -> blend -> inspect -> predict -> export.

src/ holds the stages (one module each), src/tools/ the commands around them, src/core/ the library and
src/models/ the networks; `python -m src` lists them.
"""
from pathlib import Path

from .core.backend import select

ROOT = Path(__file__).resolve().parent.parent  # the checkout: run_folds.sh and data/demo live here

# The tools keep their commands (`python -m src.bench`, ...) while living in src/tools/: the package
# looks for its modules there too.
__path__.append(str(Path(__file__).resolve().parent / "tools"))

# Before any module of the package imports Keras: the backend is chosen here, once (src/core/backend.py).
BACKEND = select()
