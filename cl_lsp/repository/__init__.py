"""Repository context (issue 18): what the model may see from the workspace's other files.

`files` decides which files may be read and reads them; `tags` reads a file's definitions and
imports; `index` holds the workspace's. The sources: `definitions` (for a cursor), `chunks`
(similar code in open documents), `edits` (recent edits), each handing on `snippets`.
`selection` fits them into one budget and renders the block; `service` runs it all for a
server and keeps each document's block stable while the user types.
"""
