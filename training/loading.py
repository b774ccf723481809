"""Loading a trained model and its tokenizer for the evaluation and generation scripts."""

from pathlib import Path

from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers import AutoModel, AutoTokenizer

import hf_bnvae  # noqa: F401  (registers the Auto classes)


def load_model_and_tokenizer(name_or_path, revision=None):
    """(model in eval mode, tokenizer) from a save_pretrained folder or a hub id.

    A name that is neither an existing folder nor a valid hub id raises FileNotFoundError naming it,
    instead of transformers' message about repo-id syntax.
    """
    if not Path(name_or_path).expanduser().is_dir():
        try:
            validate_repo_id(name_or_path)
        except HFValidationError:
            raise FileNotFoundError(f"--model_name_or_path {name_or_path}: no such model folder (and not a hub id 'org/name')") from None
    model = AutoModel.from_pretrained(name_or_path, revision=revision).eval()
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=revision)
    return model, tokenizer
