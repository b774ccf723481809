"""hf_bnvae: BN-VAE (Zhu et al., ACL 2020) as a Hugging Face model package.

Importing the package registers the config and model with the Auto classes.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_bnvae import PRESETS, BNVAEConfig
from .modeling_bnvae import BNVAEForLanguageModeling, BNVAEOutput, BNVAEPreTrainedModel, gaussian_kl_per_dimension
from .tokenization_bnvae import build_word_tokenizer

AutoConfig.register("bnvae", BNVAEConfig, exist_ok=True)
AutoModel.register(BNVAEConfig, BNVAEForLanguageModeling, exist_ok=True)
AutoModelForCausalLM.register(BNVAEConfig, BNVAEForLanguageModeling, exist_ok=True)
# save_pretrained then writes auto_map and copies the code, so checkpoints load with trust_remote_code.
BNVAEConfig.register_for_auto_class()
# (auto_map holds one model class per config; remote code is loaded through AutoModel.)
BNVAEForLanguageModeling.register_for_auto_class("AutoModel")

__version__ = "0.1.0"

__all__ = [
    "BNVAEConfig",
    "BNVAEForLanguageModeling",
    "BNVAEOutput",
    "BNVAEPreTrainedModel",
    "PRESETS",
    "build_word_tokenizer",
    "gaussian_kl_per_dimension",
]
