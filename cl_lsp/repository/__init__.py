"""Repository context (issue 18): what the model may see from the workspace's other files.

`files` decides which files may be read and reads them; the sources (definitions, similar
chunks of open documents, recent edits) and the prompt's context block build on it.
"""
