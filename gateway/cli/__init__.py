"""The `notebook-gateway` command: `main` (dev, serve, check-config, config-reference) and its `policy` and
`audit` sub-commands."""
