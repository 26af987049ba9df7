"""Evaluation: multiple choice, generated answers and perplexity, as lm-eval scores them.

Engines (`mcq`, `qa`, `perplexity`) take any HF causal LM and tokenizer and score
items from `smf.data`; the numbers match lm-evaluation-harness on the same items.
"""
