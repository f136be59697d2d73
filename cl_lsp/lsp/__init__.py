"""LSP wiring only: the server's state, thin handlers, progress, the code-action flow, and the
protocol's edges (framing, message checks, transports, document sync)."""
