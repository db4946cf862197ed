"""Kubernetes: the one client (`client`, the only module that touches kubernetes_asyncio and the one
place its errors become the gateway's), the list-then-watch reflector (`reflector`) that the notebooks
backend, the policy sources and the profiles share, what their watches report (`watch_health`), and
the names Kubeflow gives meaning to (`kubeflow_names`). app.py makes and opens the one client."""
