"""Pipeline definition (create_pipeline) and its runners."""
