"""Completions, as a pipeline of named stages: the cursor context (window, region, mode) ->
the FIM prompt -> the service (reuse, debounce, newest wins, the engine) -> post-processing."""
