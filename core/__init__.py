"""What every server layer shares and that needs nothing of them: the settings.

Layers, lowest first (enforced by the import-linter contracts in pyproject.toml):
``harness`` (the pure library) < ``core`` < ``db`` < ``services``.
"""
