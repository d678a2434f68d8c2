"""The commands around the pipeline's stages: explore, adapters, cluster, bench, demo, kaggle_kernel
(`python -m src.tools.NAME --help`). Like the stages, they read and write relative to the folder they run
in; the ones that start ./run_folds.sh (demo, bench, cluster) or build the project's wheel (kaggle_kernel)
run from the repository root."""
