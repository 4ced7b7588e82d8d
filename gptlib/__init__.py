"""gptlib: the small GPT library behind the GPT Variants textbook.

One module per idea the book teaches (see README.md): config, tokenizers (with bpe), attention,
positional, layers, model, sampling, data, prepare (with tokenizer_io), train (with
train_config, train_state, checkpoint, distributed, throughput and train_cli), sample, hf
(with hf_families), finetune, scaling, inference, viz and interpret.
"""

from .config import GPTConfig
from .model import GPT, GPTOutput

__all__ = ["GPT", "GPTConfig", "GPTOutput"]
__version__ = "0.1.0"
