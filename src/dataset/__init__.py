"""The data layer: a dataset's tables and folds, the audio cache and its packed store, the input kinds.
Imports only src.base; never a deep-learning framework."""
