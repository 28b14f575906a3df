"""ccbridge backend: everything that works without a screen.

Never imports textual or rich (tests/backend/test_import_hygiene.py proves it).
"""

__version__ = "0.1.0"
