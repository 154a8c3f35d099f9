"""The `tinydiffusion` command line: main.py builds the parser from one module per command."""
from .main import main

__all__ = ["main"]
