"""bioattn: brain-inspired visual attention for robust vision models.

After ``import bioattn``, bioattn's models are registered with timm
(``timm.create_model('absvit_tiny_patch16_224')``). Importing the package itself stays cheap: if
timm is already imported the models are registered at once, otherwise as soon as timm is
imported (a post-import hook on ``timm``). Submodules load on first use.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bioattn")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

from .errors import BioattnError  # noqa: E402  (cheap: no third-party imports)

__all__ = ["BioattnError", "__version__"]


def __getattr__(name: str):
    """Submodules load on first use (``bioattn.train``, ``bioattn.evaluate``, ...)."""
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _RegisterAfterTimm(importlib.abc.Loader):
    """Runs timm's own loader, then imports ``bioattn.models`` (which registers the models)."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        importlib.import_module(f"{__name__}.models")

    def __getattr__(self, name: str):  # resource readers and the like: timm's loader answers
        return getattr(self._loader, name)


class _TimmImportHook(importlib.abc.MetaPathFinder):
    """Finds ``timm`` with the other finders and wraps its loader in :class:`_RegisterAfterTimm`;
    removes itself after that one import."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "timm":
            return None
        _remove_hook()
        spec = importlib.util.find_spec("timm")
        if spec is None or spec.loader is None:
            return None
        spec.loader = _RegisterAfterTimm(spec.loader)
        return spec


def _remove_hook() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _TimmImportHook)]


def _register_models_with_timm() -> None:
    if "timm" in sys.modules:
        importlib.import_module(f"{__name__}.models")
    elif not any(isinstance(f, _TimmImportHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _TimmImportHook())


_register_models_with_timm()
