"""Where models attend: attention maps (:mod:`.maps`) and figures of them (:mod:`.plots`)."""

from .maps import attention_maps, display_normalise, saliency, upsample

__all__ = ["attention_maps", "saliency", "upsample", "display_normalise"]
