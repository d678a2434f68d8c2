"""Freesound audio tagging: data -> audio cache -> features -> generator -> models -> train -> blend -> inspect."""
from .core.backend import select

# Before any module of the package imports Keras: the backend is chosen here, once (src/core/backend.py).
BACKEND = select()
