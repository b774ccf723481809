"""save_pretrained / from_pretrained, the Auto classes and remote code without the package."""

import json
import subprocess
import sys
import textwrap

import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

from hf_bnvae import BNVAEConfig, BNVAEForLanguageModeling
from tests.conftest import CORPUS


def trained(model, batch, steps=5):
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(steps):
        optimizer.zero_grad()
        model(**batch, labels=batch["input_ids"]).loss.backward()
        optimizer.step()
    return model.eval()


def eval_outputs(model, batch):
    with torch.no_grad():
        out = model(**batch, labels=batch["input_ids"])
    return {"mu": out.mu, "logvar": out.logvar, "recon": out.reconstruction_loss, "logits": out.logits}


def test_save_and_load_give_identical_outputs(model, batch, tokenizer, tmp_path):
    trained(model, batch)
    before = eval_outputs(model, batch)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "modeling_bnvae.py").exists()
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModel"] == "modeling_bnvae.BNVAEForLanguageModeling"

    for loader in (BNVAEForLanguageModeling, AutoModel, AutoModelForCausalLM):
        loaded = loader.from_pretrained(tmp_path)
        assert isinstance(loaded, BNVAEForLanguageModeling) and not loaded.training
        bn = loaded.latent_head.bn
        torch.testing.assert_close(bn.weight, torch.full((8,), 0.6))
        assert not bn.weight.requires_grad
        torch.testing.assert_close(bn.running_var, model.latent_head.bn.running_var)
        after = eval_outputs(loaded, batch)
        for key in before:
            torch.testing.assert_close(after[key], before[key], rtol=0, atol=0)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), BNVAEConfig)

    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(CORPUS)["input_ids"] == tokenizer(CORPUS)["input_ids"]
    assert again.decode(again("the cat sat")["input_ids"], skip_special_tokens=True) == "the cat sat"


def test_remote_code_loads_without_the_package(model, batch, tokenizer, tmp_path):
    trained(model, batch)
    before = eval_outputs(model, batch)
    model.save_pretrained(tmp_path / "ckpt")
    tokenizer.save_pretrained(tmp_path / "ckpt")
    torch.save(dict(batch), tmp_path / "batch.pt")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["hf_bnvae"] = None  # the package cannot be imported in this process
        import torch
        from transformers import AutoModel, AutoTokenizer
        model = AutoModel.from_pretrained({str(tmp_path / "ckpt")!r}, trust_remote_code=True)
        tokenizer = AutoTokenizer.from_pretrained({str(tmp_path / "ckpt")!r}, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        batch = torch.load({str(tmp_path / "batch.pt")!r})
        assert tokenizer({CORPUS!r}, padding=True, return_tensors="pt")["input_ids"].equal(batch["input_ids"])
        with torch.no_grad():
            out = model(**batch, labels=batch["input_ids"])
        torch.save({{"mu": out.mu, "logvar": out.logvar, "recon": out.reconstruction_loss, "logits": out.logits,
                    "gamma_frozen": not model.latent_head.bn.weight.requires_grad}}, {str(tmp_path / "out.pt")!r})
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    after = torch.load(tmp_path / "out.pt")
    assert after.pop("gamma_frozen")
    for key in before:
        torch.testing.assert_close(after[key], before[key], rtol=0, atol=0)
