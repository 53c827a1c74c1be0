"""Model converters: each writes one artifact from one source."""
