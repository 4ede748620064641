"""Who may read which documents: principals, API keys, document access groups, and the store view that enforces them.

`principal` says who a caller is; `keys` turns an API key into one; `rules` gives a document its groups at ingest;
`scoped` is the store view every read of a collection goes through, so no entry point applies a filter itself.
"""
