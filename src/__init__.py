"""Freesound audio tagging: data -> audio cache -> features -> generator -> models -> train -> blend -> inspect."""
from .backend import select

# Before any module of the package imports Keras: the backend is chosen here, once (src/backend.py).
BACKEND = select()
