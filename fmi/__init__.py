"""fmi: fast-memory interpretability for frozen language models.

Import the submodules you need (``fmi.models``, ``fmi.memory``, ...); importing ``fmi``
itself loads nothing heavy and has no side effects.
"""

__version__ = "0.1.0"
