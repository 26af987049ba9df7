"""Datasets: hub tasks (MedMCQA, TriviaQA, WikiText) and their offline stand-ins.

Every loader returns the item types of `smf.data.types`, so evaluation and training
never see where the data came from.
"""
