"""cl-lsp: a language server that brings Code Llama fill-in-the-middle completions to any editor."""

__version__ = "0.1.0"
