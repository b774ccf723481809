import re
from pathlib import Path

from setuptools import find_packages, setup

# The version is defined once, in hf_bnvae/__init__.py (read here without importing the package).
VERSION = re.search(r'^__version__ = "([^"]+)"', Path("hf_bnvae/__init__.py").read_text(), re.M).group(1)
TRACKING = ["tensorboard"]  # train.py --with_tracking --report_to tensorboard
# BN-CVAE's metrics (hf_bnvae.dialogue_metrics) and its data (training/prepare_chitchat.py)
DIALOGUE = ["gensim>=4.3", "chitchat-dataset==0.9.0"]
# demo/app.py, and its browser test (Playwright drives the system's Chromium: apt-get install chromium)
DEMO = ["gradio>=5.0", "matplotlib", "pandas", "playwright>=1.40"]
# the bag-of-words baseline of the classification tables (training/bag_of_words.py), not the model's
CLASSIFICATION = ["scikit-learn>=1.3"]

setup(
    name="hf_bnvae",
    version=VERSION,
    description="BN-VAE (Zhu et al., ACL 2020): a text VAE whose KL does not vanish, as a Hugging Face model",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(include=["hf_bnvae", "hf_bnvae.*"]),
    package_data={"hf_bnvae": ["evaluate_modules/*/*.py", "templates/*.md"]},
    python_requires=">=3.10",
    # What loading a checkpoint and running training/ and benchmarks/ need (a plain `pip install` of the
    # project must be able to train: ../shared/official_bench installs it that way). Install
    # torch==2.13.0 first on CPU machines (see README): a bare torch requirement pulls a multi-GB CUDA build.
    install_requires=[
        "torch>=2.6",  # transformers 5's own floor for PyTorch (torch.is_autocast_enabled(device_type) needs 2.4)
        "transformers>=5.0,<6",
        "tokenizers>=0.20",
        "safetensors>=0.4",
        "huggingface_hub>=1.0",
        "accelerate>=1.0",
        "datasets>=3.0",
        "evaluate>=0.4",
        "sacrebleu>=2.0",
        "tqdm",
        "matplotlib",
    ],
    extras_require={
        "tracking": TRACKING,
        "dialogue": DIALOGUE,
        "demo": DEMO,
        "classification": CLASSIFICATION,
        "dev": [*TRACKING, *DIALOGUE, *DEMO, *CLASSIFICATION, "pytest>=8", "ruff>=0.6"],
    },
)
