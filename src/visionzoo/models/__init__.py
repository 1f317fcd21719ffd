"""Model families. Importing this package registers every builder."""

from . import (
    classification,  # noqa: F401
    detection,  # noqa: F401
    multimodal,  # noqa: F401
    segmentation,  # noqa: F401
)
from .outputs import AuxOutput

__all__ = ["AuxOutput"]
