"""The implemented pipeline stages (one module each); placeholders live in ``recipe.py``."""
