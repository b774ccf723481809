"""Loading a trained model and its tokenizer for the evaluation and generation scripts."""

import os
import re
from pathlib import Path

from transformers import AutoModel, AutoTokenizer

import hf_bnvae  # noqa: F401  (registers the Auto classes)

HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def load_model_and_tokenizer(name_or_path, revision=None):
    """(model in eval mode, tokenizer) from a save_pretrained folder or a hub id.

    A name that is neither an existing folder nor shaped like a hub id ("org/name") raises
    FileNotFoundError naming it, instead of transformers' message about repo-id syntax.
    """
    path = Path(os.path.expanduser(name_or_path))
    if not path.is_dir() and (not HUB_ID.match(name_or_path) or name_or_path.startswith((".", "/"))):
        raise FileNotFoundError(f"--model_name_or_path {name_or_path}: no such model folder (and not a hub id 'org/name')")
    model = AutoModel.from_pretrained(name_or_path, revision=revision).eval()
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=revision)
    return model, tokenizer
