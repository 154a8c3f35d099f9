"""What a network can be conditioned on: the one Cond type (class labels, prompt token states), the captions made
from the data for text runs (captions.py), and the MiniLM text encoder (text_encoder.py).

Only Cond is imported here, so the math spine (guidance.py) can use it without loading the text encoder."""
from .cond import NULL_LABEL, Cond

__all__ = ["Cond", "NULL_LABEL"]
