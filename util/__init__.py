"""Small shared utilities: owned background tasks, metrics, serving an aiohttp app."""
