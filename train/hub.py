"""Upload a checkpoint folder to the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import HfApi

# Run state (optimizer, per-epoch checkpoints) stays local; the Hub gets what from_pretrained and people read.
IGNORE = ["runs/*", "*.pt", "*.tmp"]


def push_folder(folder: str | Path, repo_id: str, *, private: bool | None = None) -> str:
    """Create ``repo_id`` if needed and upload ``folder`` in one commit; returns the commit URL.

    The token comes from ``HF_TOKEN`` or ``hf auth login`` through ``huggingface_hub`` and is never printed.
    """
    api = HfApi()
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_url.repo_id,
        folder_path=folder,
        repo_type="model",
        commit_message="Upload ser-parallel checkpoint",
        ignore_patterns=IGNORE,
    )
    print(f"pushed {folder} to {repo_url}")
    return commit.commit_url
