"""bioattn: brain-inspired visual attention for robust vision models.

Importing the package registers its models with timm (``timm.create_model('absvit_tiny_patch16_224')``).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bioattn")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

from . import models  # noqa: E402,F401  (registers the models with timm)
from .errors import BioattnError  # noqa: E402,F401
