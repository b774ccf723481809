"""Configuration of BN-CVAE, the conditional VAE for dialogue responses with a batch-normalised
recognition mean (Zhu et al., ACL 2020, section 6.3), on the CVAE of Zhao et al. (ACL 2017)."""

from transformers import PretrainedConfig

from .configuration_bnvae import check_fields

# "switchboard": the sizes of Zhao et al. (2017) that the paper uses; "small" (the default) fits the
# dialogue experiment into 2 CPU cores.
DIALOGUE_PRESETS = {
    "switchboard": {
        "embedding_size": 200,
        "utterance_hidden_size": 300,
        "context_hidden_size": 600,
        "decoder_hidden_size": 400,
        "latent_size": 200,
    },
    "small": {
        "embedding_size": 128,
        "utterance_hidden_size": 128,
        "context_hidden_size": 256,
        "decoder_hidden_size": 256,
        "latent_size": 64,
    },
}

AUTO_MAP = {
    "AutoConfig": "configuration_bncvae.BNCVAEConfig",
    "AutoModel": "modeling_bncvae.BNCVAEModel",
    "AutoModelForSeq2SeqLM": "modeling_bncvae.BNCVAEForConditionalGeneration",
}


class BNCVAEConfig(PretrainedConfig):
    r"""Configuration of [`BNCVAEForConditionalGeneration`].

    `gamma = 0` and `use_bow = False` is the CVAE; `use_bow = True` the CVAE + bag-of-words loss of Zhao et
    al. (2017); `gamma > 0` is BN-CVAE (fixed-gamma BN on the recognition mean, and the prior network
    pulled towards N(0, I) by KL(p(z|c) || N(0, I)) in the loss).

    Args:
        vocab_size (`int`, defaults to 10000): number of token ids, special tokens included.
        embedding_size (`int`, defaults to 128): word embedding size (shared by the utterance encoder and decoder).
        utterance_hidden_size (`int`, defaults to 128): hidden size per direction of the bidirectional GRU that
            encodes each utterance (context turns and the response) into a vector of twice this size.
        context_hidden_size (`int`, defaults to 256): hidden size of the GRU that reads the utterance vectors
            (each with its speaker indicator) and gives the context vector c.
        decoder_hidden_size (`int`, defaults to 256): hidden size of the GRU decoder, initialised from [c; z].
        latent_size (`int`, defaults to 64): dimension of z.
        gamma (`float`, defaults to 0.0): fixed BN scale of the recognition mean; 0 is the CVAE. The batch-mean
            KL(q || N(0, I)) of the BN'd posterior is then >= latent_size * gamma^2 / 2 nats per response.
        bn_eps, bn_momentum (`float`, defaults 1e-5, 0.1): BatchNorm's (PyTorch's defaults).
        use_bow (`bool`, defaults to False): add the bag-of-words loss (predict the response's words from [c; z]).
        bow_hidden_size (`int`, defaults to 400): hidden size of the bag-of-words head's tanh layer.
        max_context_turns (`int`, defaults to 10): turns of context the data keeps (the most recent ones).
        max_utterance_length (`int`, defaults to 40): words kept per utterance (before `<s>` and `</s>`).
        init_range (`float`, defaults to 0.08): every weight is initialised uniform(-init_range, init_range).
        pad_token_id, bos_token_id, eos_token_id, unk_token_id (`int`, defaults 0, 1, 2, 3): special ids.
    """

    model_type = "bncvae"

    def __init__(
        self,
        vocab_size=10000,
        embedding_size=128,
        utterance_hidden_size=128,
        context_hidden_size=256,
        decoder_hidden_size=256,
        latent_size=64,
        gamma=0.0,
        bn_eps=1e-5,
        bn_momentum=0.1,
        use_bow=False,
        bow_hidden_size=400,
        max_context_turns=10,
        max_utterance_length=40,
        init_range=0.08,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        unk_token_id=3,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.embedding_size = embedding_size
        self.utterance_hidden_size = utterance_hidden_size
        self.context_hidden_size = context_hidden_size
        self.decoder_hidden_size = decoder_hidden_size
        self.latent_size = latent_size
        self.gamma = gamma
        self.bn_eps = bn_eps
        self.bn_momentum = bn_momentum
        self.use_bow = use_bow
        self.bow_hidden_size = bow_hidden_size
        self.max_context_turns = max_context_turns
        self.max_utterance_length = max_utterance_length
        self.init_range = init_range
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.unk_token_id = unk_token_id
        kwargs.setdefault("tie_word_embeddings", False)
        kwargs.setdefault("auto_map", dict(AUTO_MAP))
        super().__init__(**kwargs)
        self._validate()

    @classmethod
    def from_preset(cls, name, **overrides):
        """Config with the sizes of `name` (one of `DIALOGUE_PRESETS`), updated with `overrides`."""
        if name not in DIALOGUE_PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(DIALOGUE_PRESETS)}")
        return cls(**{**DIALOGUE_PRESETS[name], **overrides})

    @property
    def kl_lower_bound(self):
        """Lower bound of the batch-mean KL(q(z|c,x) || N(0, I)) in training, latent_size * gamma^2 / 2 nats."""
        return self.latent_size * self.gamma**2 / 2

    def _validate(self):
        check_fields(
            self,
            sizes=(
                "vocab_size",
                "embedding_size",
                "utterance_hidden_size",
                "context_hidden_size",
                "decoder_hidden_size",
                "latent_size",
                "bow_hidden_size",
                "max_context_turns",
                "max_utterance_length",
            ),
            non_negative=("gamma", "init_range"),
            booleans=("use_bow",),
        )


__all__ = ["BNCVAEConfig", "DIALOGUE_PRESETS"]
