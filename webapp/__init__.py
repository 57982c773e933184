"""The top layer: the Gradio web pages (customer chat, Model and Operator tabs) and the app's start-up.

It may import every layer below (core, runtime, retrieval, service, training, evaluation); nothing
imports it except `app.py`.
"""
