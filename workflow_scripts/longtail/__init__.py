"""longtail: the library every workflow script imports.

Scripts under ``workflow_scripts/`` only do I/O; everything they compute is a pure function
of this package, so tests import it directly (``pythonpath = ["workflow_scripts"]``).
"""

__version__ = "0.1.0"
