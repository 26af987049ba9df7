"""Using a model: ask it one question, or chat with it (`smf ask`, `smf chat`)."""
