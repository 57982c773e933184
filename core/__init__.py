"""The shared base every other package builds on: errors, the typed config, JSON Lines I/O, atomic
writes, the artifact layout and thread settings.

Imports point one way: core <- runtime <- retrieval <- service <- training, evaluation <- webapp/app.
Nothing here imports torch, faiss or gradio, and nothing here imports another package of the project.
"""
from core import threads as _threads  # noqa: F401  (sets the OpenMP wait policy before torch or faiss load)
