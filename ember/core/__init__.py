"""The core runtime: the API layer, the serialization and object-store plumbing, the backends."""
