"""Vision-language models: CLIP (arXiv:2103.00020) and BLIP (arXiv:2201.12086).

Importing this package registers their builders (task "image-text").
"""

from . import (
    blip,  # noqa: F401
    clip,  # noqa: F401
)
