"""Real-VM tests (a package only so that module names stay unique; see conftest.py)."""
