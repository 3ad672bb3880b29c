"""``rafter.train.huggingface``: Hugging Face integrations (``rafter.train.huggingface.transformers``).

Nothing here is imported by ``import rafter.train``; install the extra with ``pip install 'rafter-train[transformers]'``.
"""
