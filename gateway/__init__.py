"""Notebook Gateway: sign-in, authorization, routing and audit in front of Jupyter notebook servers."""
