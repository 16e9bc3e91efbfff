"""Per-channel pixel statistics of the data sets bioattn ships or knows (pixel values in [0, 1]).

A leaf module: models declare their input normalisation from it, data sets normalise with it.
"""

from __future__ import annotations

# ImageNet-1k (the values timm calls IMAGENET_DEFAULT_MEAN / _STD)
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# the default embedded spec's training split
EMBEDDED_MEAN: tuple[float, float, float] = (0.240, 0.240, 0.240)
EMBEDDED_STD: tuple[float, float, float] = (0.194, 0.194, 0.194)
