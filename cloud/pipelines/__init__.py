"""cloud/pipelines"""
