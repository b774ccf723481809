"""A stand-in for the hub at the network boundary: HfApi.create_repo / create_commit write into a
hub-cache layout ($HF_HUB_CACHE/models--org--name/{blobs,snapshots/<commit>,refs/<revision>}), which
huggingface_hub then reads offline exactly as it reads a real download."""

import hashlib
import os
from pathlib import Path
from types import SimpleNamespace


def install_fake_hub(monkeypatch, cache_dir):
    from huggingface_hub import HfApi

    created = []

    def create_repo(self, repo_id, *args, exist_ok=False, **kwargs):
        created.append(repo_id)
        return SimpleNamespace(repo_id=repo_id)

    def create_commit(self, repo_id, operations, *args, commit_message="", revision=None, **kwargs):
        repo = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"
        revision = revision or "main"
        files = {}
        ref = repo / "refs" / revision
        if ref.exists():  # a commit adds to what the branch already holds
            previous = repo / "snapshots" / ref.read_text()
            files = {p.name: p.resolve().read_bytes() for p in previous.iterdir()}
        for op in operations:
            with op.as_file() as handle:
                files[op.path_in_repo] = handle.read()
        commit = hashlib.sha1(b"".join(name.encode() + data for name, data in sorted(files.items()))).hexdigest()
        snapshot = repo / "snapshots" / commit
        (repo / "blobs").mkdir(parents=True, exist_ok=True)
        snapshot.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            link = snapshot / name
            if not link.exists():
                os.symlink(os.path.relpath(blob, snapshot), link)
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(commit)
        return SimpleNamespace(oid=commit, commit_url=f"https://huggingface.co/{repo_id}/commit/{commit}")

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    return created


def snapshot_dir(cache_dir, repo_id, revision="main"):
    repo = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"
    return repo / "snapshots" / (repo / "refs" / revision).read_text()
