"""The gateway's own pages and JSON API."""
