"""``python -m visionzoo`` is the ``visionzoo`` command."""

import sys

from .cli.main import main

sys.exit(main())
