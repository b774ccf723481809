"""Configuration of BN-VAE, the text VAE with a batch-normalised posterior mean (Zhu et al., ACL 2020)."""

import math

from transformers import PretrainedConfig

# Sizes used in the paper (section 5 and the official code); the paper's presets use latent size 32.
PRESETS = {
    "yahoo": {"embedding_size": 512, "encoder_hidden_size": 1024, "decoder_hidden_size": 1024},
    "yelp": {"embedding_size": 512, "encoder_hidden_size": 1024, "decoder_hidden_size": 1024},
    "ptb": {"embedding_size": 256, "encoder_hidden_size": 256, "decoder_hidden_size": 256},
    "snli": {"embedding_size": 128, "encoder_hidden_size": 512, "decoder_hidden_size": 512},
    "short_yelp": {"embedding_size": 128, "encoder_hidden_size": 512, "decoder_hidden_size": 512},
    # Brown is this project's stand-in for PTB (same register, similar sentence length): PTB sizes.
    "brown": {"embedding_size": 256, "encoder_hidden_size": 256, "decoder_hidden_size": 256},
    # The explorer's model (`train.py --preset demo`): Brown's sizes; its training preset sets gamma 1.5.
    "demo": {"embedding_size": 256, "encoder_hidden_size": 256, "decoder_hidden_size": 256},
}

# What BNVAEForSequenceClassification reads: the posterior mean after BN, or the encoder's raw mean before it.
CLASSIFIER_INPUTS = ("bn", "raw")
GAMMA_MODES = ("fixed", "learned")  # BN's scale: the paper's fixed gamma, or learned with a floor
DECODER_TYPES = ("lstm", "transformer")  # the paper's LSTM, or a causal Transformer of GPT-2 blocks
LATENT_INJECTIONS = ("memory", "embedding", "both")  # how a Transformer decoder sees z (Optimus)

AUTO_MAP = {
    "AutoConfig": "configuration_bnvae.BNVAEConfig",
    "AutoModel": "modeling_bnvae.BNVAEModel",
    "AutoModelForCausalLM": "modeling_bnvae.BNVAEForLanguageModeling",
    "AutoModelForSequenceClassification": "modeling_bnvae.BNVAEForSequenceClassification",
}


class BNVAEConfig(PretrainedConfig):
    r"""Configuration of [`BNVAEModel`] and the heads built on it ([`BNVAEForLanguageModeling`]).

    Args:
        vocab_size (`int`, defaults to 10000): number of token ids, special tokens included.
        embedding_size (`int`, defaults to 256): word embedding size (encoder and decoder each own one).
        encoder_hidden_size (`int`, defaults to 256): hidden size of the 1-layer LSTM encoder.
        decoder_hidden_size (`int`, defaults to 256): hidden size of the 1-layer LSTM decoder.
        latent_size (`int`, defaults to 32): dimension n of z.
        gamma (`float`, defaults to 0.6): fixed BatchNorm scale of the posterior mean. The expected KL over
            the data is then >= n * gamma^2 / 2 nats per sentence. 0 means no BN (a plain VAE).
        gamma_mode (`str`, defaults to "fixed"): "fixed" (the paper's) or "learned": each latent dimension's
            BN scale is then gamma_min + softplus(a parameter), trained with the model and started at gamma,
            so it never falls below gamma_min and the bound becomes n * gamma_min^2 / 2 (the paper leaves
            learning gamma as future work).
        gamma_min (`float`, defaults to 0.0): with gamma_mode "learned", the floor of every dimension's scale
            (0 <= gamma_min < gamma).
        bn_eps (`float`, defaults to 1e-5): BatchNorm epsilon (PyTorch's, as the official code). BN sets the
            batch std of mu to gamma * sqrt(v / (v + eps)), v the batch variance of the raw mean: with the
            encoder's default initialisation v is about 1e-3 to 1e-2 from the first step, so the std is within
            1% of gamma. (An encoder initialised at +-0.01 gives v ~ 1e-8, which needs eps ~ 1e-16 to keep
            the bound early in training.) Train with Adam(W)? Use 1e-12: with 1e-5 Adam shrank v below eps
            and escaped the bound at latent 64, gamma 1.5 (RESULTS.md). BN runs in fp32 whatever the autocast
            dtype.
        bn_momentum (`float`, defaults to 0.1): BatchNorm running-statistics momentum (PyTorch convention).
        decoder_dropout_in (`float`, defaults to 0.5): dropout on the decoder's input embeddings.
        decoder_dropout_out (`float`, defaults to 0.5): dropout on the decoder's LSTM outputs.
        decoder_type (`str`, defaults to "lstm"): the paper's LSTM decoder, or "transformer": a causal
            Transformer built from transformers' GPT-2 blocks (no pretrained weights), decoder_hidden_size
            wide (its token embeddings too), with decoder_layers blocks of decoder_heads heads.
        decoder_layers (`int`, defaults to 4), decoder_heads (`int`, defaults to 4): the Transformer's size.
        latent_injection (`str`, defaults to "both"): how the Transformer decoder sees z, the two ways of
            Optimus (Li et al., 2020): "memory", a vector W z at a position before `<s>` that every layer
            attends to; "embedding", W' z added to every input embedding; or "both".
        max_position_embeddings (`int`, defaults to 512): the Transformer's longest input (memory included).
        transformer_dropout (`float`, defaults to 0.1): dropout in the Transformer (embeddings, attention,
            residuals), GPT-2's.
        use_latent (`bool`, defaults to True): False gives the LSTM language-model baseline (no encoder, no z).
        delta_rate (`float`, defaults to 0.0): delta-VAE committed rate delta in nats per latent dimension
            (official construction): the posterior std is kept inside the two roots of KL(sigma) = delta and
            the mean is built so that each dimension's KL is exactly delta + relu(m) / 2, m the raw mean.
            0 disables it.
        free_bits (`float`, defaults to 0.0): free-bits target of the training loss, in nats per sentence
            (official semantics): the KL term of each sentence whose KL is at most the target is switched off.
            0 disables it.
        free_bits_per_dimension (`bool`, defaults to False): instead, switch off each dimension of each
            sentence whose KL is at most free_bits / latent_size.
        init_range (`float`, defaults to 0.01): decoder weights are initialised uniform(-init_range, init_range).
        embedding_init_range (`float`, defaults to 0.1): the decoder's embedding is initialised uniform(-r, r).
        encoder_init_range (`float`, *optional*): None (the default, as the official BN-VAE code) keeps
            PyTorch's default initialisation of the encoder (LSTM and linear weights uniform(+-1/sqrt(fan)),
            embedding N(0, 1)); a number r initialises every encoder weight uniform(-r, r) and its embedding
            uniform(-embedding_init_range, embedding_init_range), as He et al.'s encoder and the official
            delta-VAE encoder (r = 0.01).
        classifier_dropout (`float`, defaults to 0.5): dropout on the posterior mean before the classifier of
            [`BNVAEForSequenceClassification`] (the paper's).
        classifier_input (`str`, defaults to "bn"): the posterior mean the classifier reads: "bn" (after the BN
            head, this package's default and the official fine-tuning script's with `--gamma`) or "raw" (the
            encoder's mean before BN, the official script's default).
        output_layer_bias (`bool`, defaults to False): the decoder's output layer has a bias (the official
            decoder has none). Checkpoints saved before this field existed (hf_bnvae <= 0.2.0) had one, and
            load with it.
        pad_token_id, bos_token_id, eos_token_id, unk_token_id (`int`, defaults 0, 1, 2, 3): special ids.
    """

    model_type = "bnvae"

    def __init__(
        self,
        vocab_size=10000,
        embedding_size=256,
        encoder_hidden_size=256,
        decoder_hidden_size=256,
        latent_size=32,
        gamma=0.6,
        gamma_mode="fixed",
        gamma_min=0.0,
        bn_eps=1e-5,
        bn_momentum=0.1,
        decoder_dropout_in=0.5,
        decoder_dropout_out=0.5,
        decoder_type="lstm",
        decoder_layers=4,
        decoder_heads=4,
        latent_injection="both",
        max_position_embeddings=512,
        transformer_dropout=0.1,
        use_latent=True,
        delta_rate=0.0,
        free_bits=0.0,
        free_bits_per_dimension=False,
        init_range=0.01,
        embedding_init_range=0.1,
        encoder_init_range=None,
        classifier_dropout=0.5,
        classifier_input="bn",
        output_layer_bias=None,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        unk_token_id=3,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.embedding_size = embedding_size
        self.encoder_hidden_size = encoder_hidden_size
        self.decoder_hidden_size = decoder_hidden_size
        self.latent_size = latent_size
        self.gamma = gamma
        self.gamma_mode = gamma_mode
        self.gamma_min = gamma_min
        self.bn_eps = bn_eps
        self.bn_momentum = bn_momentum
        self.decoder_dropout_in = decoder_dropout_in
        self.decoder_dropout_out = decoder_dropout_out
        self.decoder_type = decoder_type
        self.decoder_layers = decoder_layers
        self.decoder_heads = decoder_heads
        self.latent_injection = latent_injection
        self.max_position_embeddings = max_position_embeddings
        self.transformer_dropout = transformer_dropout
        self.use_latent = use_latent
        self.delta_rate = delta_rate
        self.free_bits = free_bits
        self.free_bits_per_dimension = free_bits_per_dimension
        self.init_range = init_range
        self.embedding_init_range = embedding_init_range
        self.encoder_init_range = encoder_init_range
        self.classifier_dropout = classifier_dropout
        self.classifier_input = classifier_input
        if output_layer_bias is None:
            # A config.json written before the field existed (it carries transformers_version) comes from a
            # model whose output layer had a bias; a new config follows the official decoder (no bias).
            output_layer_bias = "transformers_version" in kwargs
        self.output_layer_bias = output_layer_bias
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.unk_token_id = unk_token_id
        kwargs.setdefault("tie_word_embeddings", False)
        # Every class a checkpoint can be loaded as with trust_remote_code (save_pretrained adds the saved one).
        kwargs.setdefault("auto_map", dict(AUTO_MAP))
        super().__init__(**kwargs)
        self._validate()

    @classmethod
    def from_preset(cls, name, **overrides):
        """Config with the paper's sizes for `name` (one of `PRESETS`), updated with `overrides`."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @property
    def kl_lower_bound(self):
        """Guaranteed lower bound of the expected KL, n * gamma^2 / 2 (learned gamma: n * gamma_min^2 / 2), in
        nats per sentence."""
        if not self.use_latent:
            return 0.0
        floor = self.gamma_min if self.gamma_mode == "learned" else self.gamma
        return self.latent_size * floor**2 / 2

    def _validate(self):
        check_fields(
            self,
            sizes=(
                "vocab_size",
                "embedding_size",
                "encoder_hidden_size",
                "decoder_hidden_size",
                "latent_size",
                "decoder_layers",
                "decoder_heads",
                "max_position_embeddings",
            ),
            non_negative=("gamma", "gamma_min", "delta_rate", "free_bits", "init_range", "embedding_init_range"),
            booleans=("free_bits_per_dimension", "output_layer_bias"),
            fractions=("decoder_dropout_in", "decoder_dropout_out", "classifier_dropout", "transformer_dropout"),
        )
        if self.encoder_init_range is not None and not (
            isinstance(self.encoder_init_range, (int, float)) and self.encoder_init_range > 0
        ):
            invalid(self, "encoder_init_range", "must be None (PyTorch's default) or a number > 0")
        if self.classifier_input not in CLASSIFIER_INPUTS:
            invalid(self, "classifier_input", f"must be one of {CLASSIFIER_INPUTS}")
        if self.decoder_type not in DECODER_TYPES:
            invalid(self, "decoder_type", f"must be one of {DECODER_TYPES}")
        if self.latent_injection not in LATENT_INJECTIONS:
            invalid(self, "latent_injection", f"must be one of {LATENT_INJECTIONS}")
        if self.decoder_type == "transformer" and self.decoder_hidden_size % self.decoder_heads:
            invalid(self, "decoder_heads", f"must divide decoder_hidden_size ({self.decoder_hidden_size})")
        if self.gamma_mode not in GAMMA_MODES:
            invalid(self, "gamma_mode", f"must be one of {GAMMA_MODES}")
        if self.gamma_mode == "learned" and not self.gamma_min < self.gamma:
            invalid(self, "gamma_min", f"must be below gamma ({self.gamma}), the learned scales' starting value")
        if self.delta_rate > 0 and self.gamma > 0:
            # Not invalid maths, but the paper compares them separately; refuse to mix silently.
            invalid(self, "delta_rate", "delta-VAE is a separate baseline; set gamma=0 to use it")


def invalid(config, field, rule):
    """Raise the ValueError naming `config`'s class, the field, its value and the rule it breaks."""
    raise ValueError(f"{type(config).__name__}.{field}={getattr(config, field)!r} is invalid: {rule}")


def check_fields(config, sizes=(), non_negative=(), booleans=(), fractions=()):
    """The checks every config of this package shares: `sizes` are integers >= 1, `non_negative` finite
    numbers >= 0, `booleans` True or False, `fractions` in [0, 1) (dropout rates); bn_eps > 0,
    bn_momentum in (0, 1], and the special token ids inside the vocabulary."""
    for field in sizes:
        value = getattr(config, field)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            invalid(config, field, "must be an integer >= 1")
    for field in non_negative:
        value = getattr(config, field)
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            invalid(config, field, "must be a finite number >= 0")
    for field in booleans:
        if not isinstance(getattr(config, field), bool):
            invalid(config, field, "must be True or False")
    for field in fractions:
        value = getattr(config, field)
        if not (isinstance(value, (int, float)) and 0 <= value < 1):
            invalid(config, field, "must be in [0, 1)")
    if not (isinstance(config.bn_eps, (int, float)) and config.bn_eps > 0):
        invalid(config, "bn_eps", "must be > 0")
    if not (isinstance(config.bn_momentum, (int, float)) and 0 < config.bn_momentum <= 1):
        invalid(config, "bn_momentum", "must be in (0, 1]")
    for field in ("pad_token_id", "bos_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(config, field)
        if not isinstance(value, int) or not 0 <= value < config.vocab_size:
            invalid(config, field, f"must be a token id in [0, vocab_size={config.vocab_size})")


__all__ = ["BNVAEConfig", "PRESETS"]
