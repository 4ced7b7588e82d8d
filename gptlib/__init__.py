"""gptlib: the small GPT library behind the GPT Variants textbook.

One module per idea the book teaches (see README.md): config, tokenizers (with bpe), attention,
positional, layers, model, sampling, data, train (with checkpoint and train_cli), hf (with
hf_families), finetune, scaling, inference, viz (with attention_views), interpret and
interventions.
"""

from .config import GPTConfig
from .model import GPT, GPTOutput

__all__ = ["GPT", "GPTConfig", "GPTOutput"]
__version__ = "0.1.0"
