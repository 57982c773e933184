"""Our mean pooling reproduces the reference implementation of the default encoder (sentence-transformers)."""
import numpy as np


def test_embeddings_match_sentence_transformers(embedder):
    from sentence_transformers import SentenceTransformer

    from runtime.embedder import resolve_model_path

    reference = SentenceTransformer(resolve_model_path(embedder.name), device="cpu")
    texts = ["How long does standard delivery take?", "a quiet dishwasher under $600", "hi"]
    ours = embedder.encode(texts)
    theirs = reference.encode(texts, normalize_embeddings=True)
    assert np.allclose(ours, theirs, atol=1e-4)
