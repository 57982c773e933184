"""The conversation engine: turn pipeline, NLU, policy, flows, sessions and stores.

Kept import-light on purpose: importing `service` loads neither torch nor gradio.
"""
import core  # noqa: F401  (thread settings before torch or faiss load)
