"""The ``visionzoo`` command-line tool."""
