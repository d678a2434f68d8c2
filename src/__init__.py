"""Freesound audio tagging: data -> audio cache -> features -> generator -> models -> train -> blend -> inspect."""
