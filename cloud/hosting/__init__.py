"""Hosting pipelines: finding them (entry points, specs, ``--reload``), the registry of what
exists, loading a chain and running it in a worker thread."""
