"""hf_bnvae: BN-VAE (Zhu et al., ACL 2020) as a Hugging Face model package.

Importing the package registers the config and models with the Auto classes. The modules for the
scripts (`hf_bnvae.data`, `methods`, `evaluation`, `trainer_utils`, `hub`) are imported on demand, and so
is the Trainer integration (`KLAnnealingCallback`, `DataCollatorForSentenceVAE`).
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
)

from .configuration_bncvae import DIALOGUE_PRESETS, BNCVAEConfig
from .configuration_bnvae import PRESETS, BNVAEConfig
from .modeling_bncvae import BNCVAEForConditionalGeneration, BNCVAEModel, BNCVAEModelOutput, BNCVAEOutput
from .modeling_bnvae import (
    BNVAEForLanguageModeling,
    BNVAEForSequenceClassification,
    BNVAELanguageModelingOutput,
    BNVAEModel,
    BNVAEModelOutput,
    BNVAEPreTrainedModel,
    gaussian_kl_per_dimension,
    vae_loss,
)
from .saving import load_pretrained, save_pretrained_atomically
from .tokenization_bnvae import build_word_tokenizer

__version__ = "0.3.0"

AutoConfig.register("bnvae", BNVAEConfig, exist_ok=True)
AutoModel.register(BNVAEConfig, BNVAEModel, exist_ok=True)
AutoModelForCausalLM.register(BNVAEConfig, BNVAEForLanguageModeling, exist_ok=True)
AutoModelForSequenceClassification.register(BNVAEConfig, BNVAEForSequenceClassification, exist_ok=True)
# save_pretrained then copies the code next to the weights; the config's auto_map names every class.
BNVAEConfig.register_for_auto_class()
BNVAEModel.register_for_auto_class("AutoModel")
BNVAEForLanguageModeling.register_for_auto_class("AutoModelForCausalLM")
BNVAEForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")

AutoConfig.register("bncvae", BNCVAEConfig, exist_ok=True)
AutoModel.register(BNCVAEConfig, BNCVAEModel, exist_ok=True)
AutoModelForSeq2SeqLM.register(BNCVAEConfig, BNCVAEForConditionalGeneration, exist_ok=True)
BNCVAEConfig.register_for_auto_class()
BNCVAEModel.register_for_auto_class("AutoModel")
BNCVAEForConditionalGeneration.register_for_auto_class("AutoModelForSeq2SeqLM")

# transformers' Trainer integration, imported on first use (it imports transformers' trainer modules)
_TRAINER_NAMES = ("DataCollatorForSentenceVAE", "KLAnnealingCallback", "PlateauCallback", "compute_vae_metrics")


def __getattr__(name):
    if name in _TRAINER_NAMES:
        from . import trainer_callbacks

        return getattr(trainer_callbacks, name)
    raise AttributeError(f"module 'hf_bnvae' has no attribute {name!r}")


__all__ = [
    "DataCollatorForSentenceVAE",
    "KLAnnealingCallback",
    "PlateauCallback",
    "compute_vae_metrics",
    "DIALOGUE_PRESETS",
    "PRESETS",
    "BNCVAEConfig",
    "BNCVAEForConditionalGeneration",
    "BNCVAEModel",
    "BNCVAEModelOutput",
    "BNCVAEOutput",
    "BNVAEConfig",
    "BNVAEForLanguageModeling",
    "BNVAEForSequenceClassification",
    "BNVAELanguageModelingOutput",
    "BNVAEModel",
    "BNVAEModelOutput",
    "BNVAEPreTrainedModel",
    "build_word_tokenizer",
    "gaussian_kl_per_dimension",
    "load_pretrained",
    "save_pretrained_atomically",
    "vae_loss",
]
