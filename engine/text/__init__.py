"""Prompt tokenisation from local tokenizer files."""
