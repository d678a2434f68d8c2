"""The base layer: errors, config values, the network registry, PCM, metrics, paths, atomic files, the
backend choice and the command skeleton. Imports nothing else of the project."""
