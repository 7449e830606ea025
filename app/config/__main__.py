"""`python -m app.config`: the README's configuration table, in markdown."""

from app.config import markdown

print(markdown(), end="")
