"""The command line: composes the cloud app and the local relay (which never import each other)."""
