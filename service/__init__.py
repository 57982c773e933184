"""The conversation engine: turn pipeline, NLU, policy, flows, sessions, stores and UI glue.

Kept import-light on purpose: `service.config` and `service.errors` are used by `training/`
and `retrieval/` too, and must not pull in torch or gradio.
"""

import os

# torch and faiss each start an OpenMP pool; with both loaded, idle threads of one spin while the
# other works (a turn took 357 ms instead of 17 ms here). Must be set before either is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
