"""The conversation engine: turn pipeline, NLU, policy, flows, sessions, stores and UI glue.

Kept import-light on purpose: `service.config` and `service.errors` are used by `training/`
and `retrieval/` too, and must not pull in torch or gradio.
"""
