"""Pretrained weights that travel inside PyPI packages: which file of which package, how to install
it, and whose work it is. No model hub is needed; the files are read without the package's own code
(src.models.torch_checkpoint), so neither it nor torch is imported."""
from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from ..base.errors import SetupError

REQUIREMENTS = "requirements-pretrained.txt"


@dataclass(frozen=True)
class Weights:
    package: str
    version: str
    file: str
    """the checkpoint's path inside the installed package"""
    credit: str
    license: str

    @property
    def install(self) -> str:
        # --no-deps: the package pins numpy 1.23 and librosa 0.9.2, and only its weights file is used.
        return f"pip install --no-deps {self.package}=={self.version}"

    def path(self) -> Path:
        """The installed checkpoint; a SetupError saying how to install it when it is absent."""
        try:
            distribution = importlib.metadata.distribution(self.package)
        except importlib.metadata.PackageNotFoundError:
            raise SetupError(f"the pretrained weights ({self.credit}, {self.license}) come with the "
                            f"{self.package} package, which is not installed. Install them with "
                            f"`pip install --no-deps -r {REQUIREMENTS}` (that is: `{self.install}`), "
                            f"then run the same command again.") from None
        path = Path(distribution.locate_file(self.file))
        if not path.is_file():
            raise SetupError(f"{self.package} {distribution.version} is installed but holds no {self.file} "
                            f"(looked for {path}); reinstall it with `{self.install} --force-reinstall`.")
        return path


WEIGHTS = {
    "aisfx": Weights("aisfx", "0.1.2", "aisfx/models/checkpoint.pth",
                     "A. B. Ma and A. Lerch, Representation Learning for the Automatic Indexing of Sound "
                     "Effects Libraries, ISMIR 2022", "CC BY 4.0"),
}
