"""python -m src: the stages in the order the data flows through them, then the tools around them,
each with one line from its own docstring (`python -m src.STAGE --help` says the rest)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

STAGES = ["data", "audio_cache", "features", "train", "blend", "inspect_oof", "predict", "export"]
TOOLS = ["explore", "adapters", "cluster", "bench", "demo", "kaggle_kernel", "rehearsal"]
HERE = Path(__file__).resolve().parent


def summary(module: str) -> str:
    """The first sentence of a module's docstring, without its "Stage N, name:" prefix."""
    path = HERE / f"{module}.py" if module in STAGES else HERE / "tools" / f"{module}.py"
    text = " ".join(ast.get_docstring(ast.parse(path.read_text())).split("\n\n")[0].split())
    text = re.sub(r"^Stage \d+, [\w ]+: ", "", text)
    return text.split(". ")[0].rstrip(".")


def main() -> None:
    print("The pipeline, in order (./run_folds.sh MODEL runs `train` for every fold):")
    for k, module in enumerate(STAGES, 1):
        print(f"  {k}. python -m src.{module:<12} {summary(module)}")
    print("Around it:")
    for module in TOOLS:
        print(f"     python -m src.tools.{module:<13} {summary(module)}")
    print("The library, in layers that import downwards only: src/training/ <- src/feeds/, src/models/ <- "
          "src/dataset/ <- src/base/;\nsee docs/architecture.md")


if __name__ == "__main__":
    main()
