"""Small helpers the notebooks call, one module per chapter topic, so that cells stay short."""
