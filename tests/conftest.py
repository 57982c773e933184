"""Shared fixtures. Models and demo indexes are session-scoped: loading the encoder and embedding
the demo pack dominate the suite's run time, so they happen once."""
from __future__ import annotations

import os

# torch and faiss each bring an OpenMP runtime; with both loaded, idle threads of one spin while
# the other works, and on a small shared CPU faiss' k-means (IVF-PQ) slows from ~0.03 s to ~6 s.
# Must be set before either library starts its thread pool.
import core  # noqa: E402,F401  (sets the OpenMP wait policy before torch and faiss load)

import json
import shutil
from pathlib import Path

import pytest

from core.config import DEFAULT_ENCODER, load_config


def read_jsonl(path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@pytest.fixture(scope="session")
def demo_config():
    """The embedded demo deployment (configs/demo.yaml)."""
    return load_config()


@pytest.fixture(scope="session")
def embedder():
    """The default encoder (all-MiniLM-L6-v2, resolved offline)."""
    from runtime.embedder import Embedder

    return Embedder(DEFAULT_ENCODER)


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    """A second, different Hugging Face encoder (random 2-layer BERT, default tokenizer) saved the
    Hugging Face way: for "any encoder" and encoder-mismatch tests."""
    import torch
    from transformers import BertConfig, BertModel

    from runtime.embedder import resolve_model_path

    src = Path(resolve_model_path(DEFAULT_ENCODER))
    out = tmp_path_factory.mktemp("tiny_encoder")
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (src / name).exists():
            shutil.copy(src / name, out / name)
    return out


@pytest.fixture(scope="session")
def demo_faq_index(demo_config, embedder):
    from retrieval.faq import FaqIndex

    return FaqIndex.build(read_jsonl(demo_config.data.faq), embedder, exact_max=demo_config.retrieval.exact_max)


@pytest.fixture(scope="session")
def demo_recommender(demo_config, embedder):
    from retrieval.recommend import Recommender

    return Recommender.build(read_jsonl(demo_config.data.products), embedder, exact_max=demo_config.retrieval.exact_max)
