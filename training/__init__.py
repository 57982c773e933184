"""Training: data, the one training loop (fine-tuning and distillation are objectives), compression,
tuning and the build pipeline."""
import core  # noqa: F401  (thread settings before torch or faiss load)
