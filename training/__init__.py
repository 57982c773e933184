import os

# torch and faiss each start an OpenMP pool; with both loaded, idle threads of one spin while the
# other works (a turn took 357 ms instead of 17 ms here). Must be set before either is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
