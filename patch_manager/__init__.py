"""The composition root: command line, process wiring and logging. The only package that
imports both ``actors`` and ``web``.
"""

__version__ = "0.1.0"
