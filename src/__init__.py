"""Freesound audio tagging: data -> audio cache -> features -> train -> blend -> inspect -> predict -> export.

src/ holds the stages (one module each) and, below them, the library in layers that import downwards
only: training <- feeds, models <- dataset <- base (docs/architecture.md, checked by import-linter).
src/tools/ holds the commands around the stages; `python -m src` lists them all.
"""
from .base import backend

# Before any module of the package imports Keras: the backend is chosen here, once. Never raises: a
# command that needs Keras reports a failed choice (backend.current()).
backend.select()
