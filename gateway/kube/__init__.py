"""Kubernetes: the one client (`client`, the only module that touches kubernetes_asyncio) and the list-then-watch
reflector (`reflector`) that the notebooks backend, the policy sources and the profiles share."""
