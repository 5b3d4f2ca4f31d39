"""The built-in pipelines, registered through entry points like any plugin: measuring signals
(passthrough, test-tone, av-sync, bursty-av) and the voice effects."""
