"""gptlib: the small GPT library behind the GPT Variants textbook.

One module per idea the book teaches (see README.md): config, tokenizers (with bpe and
tokenizer_io), attention (with kv_cache), positional, layers, model (with loss), sampling,
generation, data, prepare (with run_tokenizer), train (with train_config, train_state,
checkpoint, distributed, throughput and train_cli), sample, hf (with hf_configs and
hf_families), finetune, scaling, inference, viz (with attention_views), interpret and
interventions.
"""

from .config import GPTConfig
from .generation import Generation
from .model import GPT, GPTOutput

__all__ = ["GPT", "GPTConfig", "GPTOutput", "Generation"]
__version__ = "0.1.0"
