"""bioattn: brain-inspired visual attention for robust vision models.

Importing the package registers its models with timm (``timm.create_model('absvit_tiny_patch16_224')``).
"""

__version__ = "0.1.0"

from . import models  # noqa: E402,F401  (registers the models with timm)
from .errors import BioattnError  # noqa: E402,F401
