"""User-side examples: a user's own system joining the registry with one entry."""
