"""The pytest suite: ``python -m pytest tools/tests`` from code/."""
