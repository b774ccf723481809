from setuptools import find_packages, setup

setup(
    name="hf_bnvae",
    version="0.1.0",
    description="BN-VAE (Zhu et al., ACL 2020): a text VAE whose KL does not vanish, as a Hugging Face model",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["hf_bnvae", "hf_bnvae.*"]),
    package_data={"hf_bnvae": ["evaluate_modules/*/*.py", "templates/*.md"]},
    python_requires=">=3.10",
    install_requires=[
        # Install torch==2.13.0 first on CPU machines (see README): a bare torch pulls a CUDA build.
        "torch>=2.1",
        "transformers>=5.0,<6",
        "accelerate>=1.0",
        "datasets>=3.0",
        "evaluate>=0.4",
        "tokenizers>=0.20",
        "safetensors>=0.4",
        "tqdm",
        "matplotlib",
        "huggingface_hub>=1.0",
    ],
    extras_require={"dev": ["pytest>=8", "tensorboard"]},
)
