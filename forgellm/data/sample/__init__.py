"""The sample dataset: Vendrasil, an invented island nation (see `generator`)."""
