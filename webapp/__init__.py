"""The top layer: the FastAPI server (customer chat at /, operator console at /operator, REST API,
widget), its security (tokens, limits, API keys) and the app's start-up.

It may import every layer below (core, runtime, retrieval, service, training, evaluation); nothing
imports it except `app.py`.
"""
