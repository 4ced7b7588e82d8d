"""gptlib: the small GPT library behind the GPT Variants textbook.

One module per idea the book teaches (see README.md): config, tokenizers, attention,
positional, layers, model, sampling, hf, data, train, viz.
"""

from .config import GPTConfig
from .model import GPT, GPTOutput

__all__ = ["GPT", "GPTConfig", "GPTOutput"]
__version__ = "0.1.0"
